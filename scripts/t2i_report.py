"""The text-to-image demo's report (scripts/t2i_demo.py --stage report): docs/results/text-to-image.md
and .json from the measured rows, budget grids with the prompts as column labels, and the FLOP
ratios of the paper's Qwen-Image 20B geometry from elit's analytic counts."""
from __future__ import annotations

import json
import pathlib

import torch

from elit._io import write_json, write_text

STEPS_NOTE = "20 Euler steps, time shift 2.0"


def qwen_image_ratios() -> dict:
    """The paper's Table 3 setting: Qwen-Image 20B (60 blocks, width 3072, 24 heads), 1024px =
    4096 image tokens, ~300 text tokens, Read after 8 and Write before the last 8; windows 16x16
    (16 groups, J = 256). Cost of one guided step (cond + uncond pass) relative to the original
    model with CFG; cheap CFG runs the uncond pass at 12.5% (32 latents per window)."""
    from elit.cost import analytic_gflops
    from elit.model import ModelConfig
    from elit.model.backbones import QwenImageArgs
    rows = {}
    for window in ((16, 16), (8, 8)):
        J = window[0] * window[1]
        plain = ModelConfig(backbone=QwenImageArgs(input_size=128, text_tokens=300))
        elastic = plain.override(elit=True, head_depth=8, tail_depth=8, window=list(window), latent_pos="tokens",
                                 min_budget=J // 8)
        teacher = analytic_gflops(plain)
        weak = analytic_gflops(elastic, J // 8)
        table = []
        for fraction in (1.0, 0.5, 0.25, 0.125):
            cond = analytic_gflops(elastic, fraction)
            table.append({"image_tokens": f"{fraction:.1%}", "latents_per_window": int(J * fraction),
                          "gflops_per_pass": round(cond, 1), "pass_vs_original": round(cond / teacher, 3),
                          "ccfg_step_vs_original_cfg": round((cond + weak) / (2 * teacher), 3)})
        rows[f"{window[0]}x{window[1]}"] = {"original_gflops_per_pass": round(teacher, 1), "budgets": table}
    return {"setting": "Qwen-Image 20B geometry, 1024px (4096 image tokens), 300 text tokens, 8-44-8 split; "
                       "analytic FLOPs (2 x MACs) per image", "paper_ccfg_ratios": [0.688, 0.494, 0.409, 0.369],
            "windows": rows}


def findings(rows: dict) -> list[str]:
    """What the table shows, in numbers read from it."""
    teacher, init = rows["teacher-bfull-cfg"], rows["elit-init-b16-cfg"]
    elit = [r for r in rows.values() if r["model"] == "elit"]
    cheapest = min(elit, key=lambda r: r["gflops_per_image"])
    fd, acc = [r["fd_fmnist"] for r in elit], [r["prompt_accuracy"] for r in elit]
    pairs = [(rows[f"elit-b{r['budget']}-cfg"], r) for r in elit if r["guidance"] == "ccfg"
             and r["budget"] != r["weak_budget"]]
    penalty = max(c["fd_fmnist"] - f["fd_fmnist"] for f, c in pairs)
    return ["What it shows:", "",
            f"- Before fine-tuning, the elastic model is not the teacher (FD-FMNIST {init['fd_fmnist']:.1f}, prompt "
            f"accuracy {init['prompt_accuracy']:.0%}: its Write starts at zero and the text stream passes an untrained "
            f"core). After "
            f"distillation every budget recovers most of the teacher's quality with CFG (FD {teacher['fd_fmnist']:.1f}, "
            f"{teacher['prompt_accuracy']:.1%}): FD {min(fd):.1f} to {max(fd):.1f}, prompt accuracy "
            f"{min(acc):.1%} to {max(acc):.1%}, RMS distance to the teacher's own sample "
            f"{min(r['rmse_to_teacher'] for r in elit):.3f} to {max(r['rmse_to_teacher'] for r in elit):.3f}.",
            f"- Quality barely moves with the budget while the cost falls to {cheapest['cost_vs_teacher_cfg']:.3f}x "
            f"the teacher's CFG run ({cheapest['budget']}/16 latents per window). Cheap CFG costs less than CFG at "
            f"every budget above the weak one, for at most {penalty:.2f} FD here.",
            "- At this tiny width (64) the Read and Write are a large part of a block, so ELIT at full budget costs "
            f"{rows['elit-b16-cfg']['cost_vs_teacher_cfg']:.2f}x the teacher; at Qwen-Image's width they add 1.3% "
            "(table below). The student's remaining gap to the teacher is what 1000 fine-tuning steps on a "
            "CPU leave; the paper fine-tunes for 120k steps."]


def grid(out, path, rows, labels, prompts):
    from elit.viz import budget_grid
    budget_grid(rows, labels, path, column_labels=prompts)
    return path


def write_report(out: pathlib.Path, args, settings, key, prompts) -> None:
    docs = pathlib.Path(args.docs)
    measured = json.loads((out / "eval" / "rows.json").read_text())
    rows = {key(s): measured[key(s)] for s in settings}          # in the plan's order
    times = json.loads((out / "times.json").read_text())
    ratios = qwen_image_ratios()
    _, texts = prompts(out, 10)
    figures = docs / "text-to-image"
    figures.mkdir(parents=True, exist_ok=True)

    def first10(k):
        return torch.load(out / "eval" / f"{k}.pt")["images"][:10].clamp(-1, 1)
    made = []
    for guidance in ("cfg", "ccfg"):
        keys = ["teacher-bfull-cfg"] + [key(s) for s in settings if s["model"] == "elit" and s["guidance"] == guidance]
        labels = ["teacher, CFG"] + [f"ELIT {rows[k]['budget']}/16, {guidance.upper()}" for k in keys[1:]]
        if guidance == "cfg":
            keys.insert(1, "elit-init-b16-cfg")
            labels.insert(1, "ELIT 16/16 before fine-tuning")
        made.append(grid(out, figures / f"budgets-{guidance}.png", [first10(k) for k in keys], labels, texts))
    pipeline = torch.load(out / "eval" / "pipeline.pt")
    made.append(grid(out, figures / "pipeline.png", [pipeline[16].clamp(-1, 1), pipeline[4].clamp(-1, 1)],
                     ["pipeline, ELIT 16/16", "pipeline, ELIT 4/16"], texts))
    ft = [json.loads(line) for line in (out / "elit" / "log.jsonl").read_text().splitlines()]
    result = {"protocol": {"samples_per_setting": args.samples, "prompts": texts, "seeds": f"0..{args.samples - 1}, "
                           "prompt = seed % 10", "sampler": STEPS_NOTE, "guidance_lambda": args.scale,
                           "fd": "FD-FMNIST (NOT FID): elit's Fashion-MNIST CNN features vs the 10k test images",
                           "prompt_accuracy": "the Fashion-MNIST classifier's argmax equals the prompted class",
                           "rmse_to_teacher": "per-image RMS pixel difference ([-1, 1]) to the teacher's sample "
                                              "from the same seed and prompt (teacher with CFG for CFG/CCFG rows)",
                           "gflops": "analytic, per image, whole sampling run, both passes of guidance",
                           "teacher_steps": args.teacher_steps, "finetune_steps": args.finetune_steps},
              "rows": rows, "wall_seconds": times, "finetune_log_first": ft[0], "finetune_log_last": ft[-1],
              "qwen_image_20b": ratios, "figures": [str(p.relative_to(docs)) for p in made]}
    write_json(docs / "text-to-image.json", result)
    write_text(docs / "text-to-image.md", markdown(result))


def markdown(r: dict) -> str:
    """The results page, from the JSON alone (tests/test_t2i_results.py checks the committed pair)."""
    p, rows, t = r["protocol"], r["rows"], r["wall_seconds"]
    lines = ["# Text-to-image: a (tiny) Qwen-Image made elastic and fine-tuned into ELIT", "",
             "Generated by `python scripts/t2i_demo.py --out runs/t2i` (the numbers below are read from "
             "[text-to-image.json](text-to-image.json)).", "",
             "**Read this first.** The \"pretrained\" teacher here was trained from scratch, in minutes, on this "
             "2-core CPU: a 6-block, width-64 `QwenImageTransformer2DModel` (diffusers' own class) on "
             "Fashion-MNIST with templated captions (\"a photo of a dress\", ...; 10% empty) encoded by a "
             "word-level text encoder built in code (`elit.data.fmnist_captions`). Nothing can be downloaded "
             "here, so no real Qwen-Image weights were used. Everything after the teacher is the path a real "
             "model takes: the teacher is saved as a diffusers folder and loaded with `from_pretrained`, "
             "`elit finetune --teacher FOLDER` distils it into ELIT, and the student samples in elit's sampler "
             "and in the stock `QwenImagePipeline`.", "",
             "## Setup", "",
             "- Teacher: `fmnist-t2i-qwen` (1x32x32 image as the latent, packed 2x2 -> 16x16 = 256 image tokens, "
             "8 text tokens, 6 blocks, width 64, MSRoPE), trained with `elit train` "
             f"({p['teacher_steps']} steps of batch 32).",
             "- ELIT: Read after block 1, Write before block 6 (1-4-1), 16 windows of 4x4 tokens (J = 16), "
             "latents on their tokens' MSRoPE positions (coarse-to-fine), budgets 2..16; `elit finetune` "
             f"({p['finetune_steps']} steps of batch 32, multi-budget, logit-normal t with shift 2.22, "
             "loss = flow + 20 x distillation).",
             f"- Sampling: {p['sampler']}, guidance lambda = {p['guidance_lambda']:g} (w = {1 + p['guidance_lambda']:g}); "
             f"{p['samples_per_setting']} samples per row, {p['seeds']}; cheap CFG = the unconditional pass at 2/16.",
             f"- Metrics: {p['fd']} ({p['samples_per_setting']} samples, so biased upward: compare rows, not "
             f"other tables); prompt accuracy: {p['prompt_accuracy']}; distance: {p['rmse_to_teacher']}.", "",
             "## Results", "",
             "| model | image tokens kept | guidance | GFLOPs / image | vs teacher CFG | FD-FMNIST | prompt acc. "
             "| RMSE to teacher |", "|---|---|---|---|---|---|---|---|"]
    names = {"teacher": "teacher", "elit": "ELIT", "elit-init": "ELIT before fine-tuning"}
    for row in rows.values():
        kept = "100% (all)" if row["budget"] is None else f"{row['budget'] / 16:.1%} ({row['budget']}/16)"
        guidance = row["guidance"].upper() if row["guidance"] != "none" else "none"
        if row["guidance"] == "ccfg":
            guidance += " (uncond 2/16)"
        distance = "(reference)" if row["model"] == "teacher" else f"{row['rmse_to_teacher']:.3f}"
        lines.append(f"| {names[row['model']]} | {kept} | {guidance} | {row['gflops_per_image']:.2f} | "
                     f"{row['cost_vs_teacher_cfg']:.3f}x | {row['fd_fmnist']:.2f} | {row['prompt_accuracy']:.1%} | "
                     f"{distance} |")
    lines += ["", *findings(rows)]
    first, last = r["finetune_log_first"], r["finetune_log_last"]
    lines += ["", f"Fine-tuning log: step {first['step']}: flow {first['loss_flow']:.4f}, distill "
              f"{first['loss_distill']:.4f}; step {last['step']}: flow {last['loss_flow']:.4f}, distill "
              f"{last['loss_distill']:.4f} (lambda = 20).", "",
              "Wall time on this machine (2 CPU cores shared with other jobs, one torch thread): " +
              ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items()) + ".", "",
              "Budget grids (columns: the prompts; seeds 0-9; rows: the teacher with CFG, then ELIT at each budget):", "",
              "![CFG](text-to-image/budgets-cfg.png)", "", "![cheap CFG](text-to-image/budgets-ccfg.png)", "",
              "The student inside the stock `QwenImagePipeline` (its own scheduler and its norm-rescaled \"true CFG\", "
              "so not the same samples as above), at 16/16 and 4/16 with the unconditional pass at 2/16, via "
              "`attention_kwargs={\"elit_budget\": b, \"elit_uncond_budget\": 2}`:", "",
              "![pipeline](text-to-image/pipeline.png)", "",
              "## FLOPs at Qwen-Image's real geometry", "", r["qwen_image_20b"]["setting"] + ". Cost of one guided step "
              "(cond + uncond) relative to the original model with CFG; cheap CFG's uncond pass at 12.5%.", "",
              "| windows | image tokens | GFLOPs per pass | pass vs original | CCFG step vs original CFG | paper |",
              "|---|---|---|---|---|---|"]
    paper = r["qwen_image_20b"]["paper_ccfg_ratios"]
    for window, block in r["qwen_image_20b"]["windows"].items():
        for b, ref in zip(block["budgets"], paper):
            lines.append(f"| {window} | {b['image_tokens']} | {b['gflops_per_pass']:.0f} | {b['pass_vs_original']:.3f} | "
                         f"{b['ccfg_step_vs_original_cfg']:.3f} | {ref} |")
        lines.append(f"| {window} | original | {block['original_gflops_per_pass']:.0f} | 1 | 1 | 1 |")
    return "\n".join(lines) + "\n"
