"""The offline text-to-image demo: a tiny Qwen-Image teacher -> ELIT by distillation -> every budget.

Nothing can be downloaded here, so the "pretrained" text-to-image model is trained first, in
minutes, on captioned Fashion-MNIST: a tiny diffusers QwenImageTransformer2DModel (6 blocks of
width 64; the 1x32x32 image is the "latent", packed 2x2 as QwenImagePipeline packs latents) with
a word-level text encoder built in code (elit.data.fmnist_captions). It is exported as a diffusers
folder (`save_pretrained`), and everything after that is the path a real Qwen-Image takes:
`elit finetune --teacher FOLDER` (from_pretrained) -> ELIT (1-4-1, 16 windows of 4x4, budgets
2..16) -> samples at 100% / 50% / 25% / 12.5% of the image tokens with CFG and cheap CFG, and
the same through the stock QwenImagePipeline.

Stages (each resumable; rerun the same command to continue):
    data      DIR/captions                 captioned Fashion-MNIST train set (text-latents)
    teacher   DIR/teacher                  elit train --config fmnist-t2i-qwen (then DIR/teacher-diffusers)
    finetune  DIR/elit                     elit finetune --teacher DIR/teacher-diffusers --config fmnist-t2i
                                           (DIR/elit/model carries the word encoder: elit sample --prompt)
    eval      DIR/eval/*.pt, rows.json     samples and metrics per (model, budget, guidance)
    report    docs/results/text-to-image.{md,json} and docs/results/text-to-image/*.png

    python scripts/t2i_demo.py --out runs/t2i                  # everything (~1.5 h on 2 busy CPU cores)
    python scripts/t2i_demo.py --out runs/t2i --smoke          # a minute: every stage, tiny sizes, no report
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
BUDGETS = [16, 8, 4, 2]                  # 100%, 50%, 25%, 12.5% of the 16 tokens per window
STEPS, SHIFT = 20, 2.0                   # Euler steps; the paper's sampling time shift


# ----------------------------------------------------------------------------- bookkeeping
class Clock:
    """Wall seconds per stage, summed over resumed runs, in DIR/times.json."""

    def __init__(self, out: pathlib.Path):
        self.path = out / "times.json"
        self.times = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, stage: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.times[stage] = round(self.times.get(stage, 0.0) + time.perf_counter() - start, 1)
        from elit._io import write_json
        write_json(self.path, self.times)
        return result


def elit_cli(*args: str) -> None:
    """Run an elit command in a fresh process (one torch thread: the machine is shared)."""
    cmd = [sys.executable, "-m", "elit", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


# ----------------------------------------------------------------------------- stages
def stage_data(out: pathlib.Path, smoke: bool) -> None:
    if (out / "captions" / "index.json").is_file():
        return
    from elit.data.fmnist_captions import build_caption_set
    build_caption_set(out / "captions", split="test" if smoke else "train")


def stage_teacher(out: pathlib.Path, args) -> None:
    elit_cli("train", "--config", "fmnist-t2i-qwen", "--out", str(out / "teacher"), "--max-steps",
             str(args.teacher_steps), f"data.root={out / 'captions'}", "log.progress=false",
             *(["train.global_batch_size=8", "log.sample_steps=2"] if args.smoke else []))
    folder = out / "teacher-diffusers"
    if not (folder / "config.json").is_file():
        import elit
        teacher = elit.load_pretrained(out / "teacher" / "model")     # the EMA weights
        teacher.backbone.transformer.save_pretrained(str(folder))     # a plain diffusers folder


def stage_finetune(out: pathlib.Path, args) -> None:
    elit_cli("finetune", "--teacher", str(out / "teacher-diffusers"), "--config", "fmnist-t2i",
             "--out", str(out / "elit"), "--max-steps", str(args.finetune_steps), f"data.root={out / 'captions'}",
             "log.progress=false", *(["train.global_batch_size=8", "log.sample_steps=2"] if args.smoke else []))
    carry_text_encoder(out / "elit" / "model")


def carry_text_encoder(model_dir: pathlib.Path) -> None:
    """The model folder carries the word encoder its captions were encoded with (model/text_encoder/),
    so `elit sample --prompt` and `elit serve` take prompts without a pipeline folder. Written after
    every finetune run: an export replaces the whole folder."""
    from elit.data.fmnist_captions import WordEncoder
    from elit.sampling.prompts import TEXT_ENCODER, WordTableEncoder
    if not (model_dir / TEXT_ENCODER / "config.json").is_file():
        WordTableEncoder(WordEncoder()).save(model_dir / TEXT_ENCODER)     # build_caption_set's encoder


def load_models(out: pathlib.Path):
    """The teacher from its diffusers folder (from_pretrained, as a real Qwen-Image loads) and the student."""
    from diffusers import QwenImageTransformer2DModel

    import elit
    transformer = QwenImageTransformer2DModel.from_pretrained(str(out / "teacher-diffusers"))
    teacher = elit.make_elastic(transformer, elit=False, input_size=32, text_tokens=8).model.eval()
    return teacher, elit.load_pretrained(out / "elit" / "model")


def initial_student(out: pathlib.Path, teacher):
    """The student as `elit finetune` started it: the teacher's weights plus the interface its seed
    initialised (not trained yet): what distillation starts from."""
    from elit.train.finetune import load_finetune_config, student_model
    cfg, _ = load_finetune_config("fmnist-t2i", [f"data.root={out / 'captions'}"], teacher=str(out / "teacher-diffusers"))
    torch.manual_seed(cfg.train.seed)      # as the trainer seeds before building the student
    return student_model(teacher, cfg.model).eval()


def settings(scale: float) -> list[dict]:
    rows = [dict(model="teacher", budget=None, guidance="none"), dict(model="teacher", budget=None, guidance="cfg"),
            dict(model="elit-init", budget=16, guidance="cfg")]
    for b in BUDGETS:
        rows.append(dict(model="elit", budget=b, guidance="cfg"))
        rows.append(dict(model="elit", budget=b, guidance="ccfg", weak_budget=BUDGETS[-1]))
    return [dict(r, scale=0.0 if r["guidance"] == "none" else scale) for r in rows]


def key(row: dict) -> str:
    weak = f"-weak{row['weak_budget']}" if row.get("weak_budget") else ""
    return f"{row['model']}-b{row['budget'] or 'full'}-{row['guidance']}{weak}"


def prompts(out: pathlib.Path, n: int):
    """Prompt k (class k % 10: 'a photo of a <class>') for seeds 0..n-1, from the data's caption table."""
    from elit.data import TextLatentDataset
    from elit.model import TextCondition
    data = TextLatentDataset(out / "captions")
    rows = [data.condition(k % 10) for k in range(n)]
    cond = TextCondition(**{k: torch.stack([r[k] for r in rows]) for k in rows[0]})
    return cond, data.captions()[:10]


def stage_eval(out: pathlib.Path, args) -> None:
    """Samples of every setting from seeds 0..N-1 (N/10 per prompt), then their metrics."""
    import elit
    from elit.eval.metrics import compute_metrics, compute_reference
    from elit.eval.metrics.classifier import FMNISTFeatures
    from elit.sampling import sampling_gflops
    from elit.viz import to_uint8

    torch.set_num_threads(1)
    folder = out / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    teacher, student = load_models(out)
    models = {"teacher": teacher, "elit": student, "elit-init": initial_student(out, teacher)}
    cond, _ = prompts(out, args.samples)
    labels = torch.arange(args.samples) % 10
    rows_path = folder / "rows.json"
    rows = json.loads(rows_path.read_text()) if rows_path.is_file() else {}
    classifier = FMNISTFeatures()
    reference = compute_reference("fmnist-test", net="fmnist", extractor=classifier, progress=False)   # once for every row
    teacher_cost = sampling_gflops(teacher.config, STEPS, guidance="cfg", scale=args.scale)
    for row in settings(args.scale):
        k = key(row)
        samples_path = folder / f"{k}.pt"
        if not samples_path.is_file():
            model = models[row["model"]]
            start = time.perf_counter()
            images = elit.sample(model, range(args.samples), labels=cond, budget=row["budget"], steps=STEPS,
                                 shift=SHIFT, guidance=row["guidance"], scale=row["scale"] or None,
                                 weak_budget=row.get("weak_budget"), batch_size=50)
            seconds = time.perf_counter() - start
            torch.save({"images": images, "seconds": seconds}, samples_path)
            print(f"{k}: {args.samples} samples in {seconds:.0f} s", flush=True)
        if k in rows:
            continue
        saved = torch.load(samples_path)
        images = saved["images"].clamp(-1, 1)
        uint8 = torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2)
        with torch.no_grad():
            accuracy = (classifier.logits(uint8).argmax(1) == labels).float().mean().item()
        fd = compute_metrics(uint8, {"fmnist": reference}, ["fd_fmnist"], extractors={"fmnist": classifier},
                             progress=False)["fd_fmnist"]
        config = teacher.config if row["model"] == "teacher" else student.config
        gflops = sampling_gflops(config, STEPS, budget=row["budget"], guidance=row["guidance"],
                                 weak_budget=row.get("weak_budget"), scale=row["scale"] or 0.0)
        rows[k] = {**row, "samples": args.samples, "steps": STEPS, "shift": SHIFT,
                   "gflops_per_image": round(gflops, 4), "cost_vs_teacher_cfg": round(gflops / teacher_cost, 4),
                   "fd_fmnist": round(fd, 3), "prompt_accuracy": round(accuracy, 4),
                   "sampling_seconds": round(saved["seconds"], 1)}
        from elit._io import write_json
        write_json(rows_path, rows)
    same = {"none": "teacher-bfull-none", "cfg": "teacher-bfull-cfg", "ccfg": "teacher-bfull-cfg"}
    for k, row in rows.items():   # distance to the teacher's sample from the same noise and prompt
        ref = torch.load(folder / f"{same[row['guidance']]}.pt")["images"].clamp(-1, 1)
        mine = torch.load(folder / f"{k}.pt")["images"].clamp(-1, 1)
        row["rmse_to_teacher"] = round((mine - ref).pow(2).flatten(1).mean(1).sqrt().mean().item(), 4)
    from elit._io import write_json
    write_json(rows_path, {key(s): rows[key(s)] for s in settings(args.scale) if key(s) in rows})


def stage_pipeline(out: pathlib.Path, args) -> None:
    """The student inside the stock QwenImagePipeline at two budgets with cheap CFG (latents out)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    import elit
    from elit.model.backbones.qwenimage import unpack
    path = out / "eval" / "pipeline.pt"
    if path.is_file():
        return
    student = elit.make_elastic(elit.load_pretrained(out / "elit" / "model"))
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                             transformer=student)
    cond, _ = prompts(out, 10)
    null = student.model.null_condition(cond)
    images = {}
    for budget in (16, 4):
        latents = pipe(prompt_embeds=cond.embeds, prompt_embeds_mask=cond.mask.long(), negative_prompt_embeds=null.embeds,
                       negative_prompt_embeds_mask=null.mask.long(), true_cfg_scale=1 + args.scale, height=256, width=256,
                       num_inference_steps=STEPS, output_type="latent", generator=torch.Generator().manual_seed(0),
                       attention_kwargs={"elit_budget": budget, "elit_uncond_budget": BUDGETS[-1]}).images
        images[budget] = unpack(latents, (16, 16))
    torch.save(images, path)


def stage_report(out: pathlib.Path, args) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from t2i_report import write_report
    write_report(out, args, settings(args.scale), key, prompts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/t2i")
    parser.add_argument("--stage", default="all", choices=["all", "data", "teacher", "finetune", "eval", "pipeline",
                                                           "report"])
    parser.add_argument("--teacher-steps", type=int, default=2000)
    parser.add_argument("--finetune-steps", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500, help="per setting (N/10 per prompt)")
    parser.add_argument("--scale", type=float, default=1.0, help="guidance lambda (w = 1 + lambda)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes to check every stage in a minute")
    parser.add_argument("--docs", default=str(REPO / "docs" / "results"), help="where the report goes")
    args = parser.parse_args()
    if args.smoke:
        args.teacher_steps, args.finetune_steps, args.samples = 4, 4, 20
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(out)
    stages = ["data", "teacher", "finetune", "eval", "pipeline", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "report" and args.smoke:
            continue
        if stage == "data":
            clock.run("data", stage_data, out, args.smoke)
        else:
            clock.run(stage, globals()[f"stage_{stage}"], out, args)
    print(json.dumps(clock.times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
