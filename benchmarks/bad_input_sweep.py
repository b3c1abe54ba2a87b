"""A careful, slightly adversarial user's sweep: bad and edge inputs over every `elit` command, the
server and a few library calls, each classified by what it did (issue 30's yardstick: >= 95% clear
errors or correct results, no data loss, nothing silently wrong).

    python benchmarks/bad_input_sweep.py --work /tmp/sweep --json benchmarks/bad_input_sweep.json [--group sample]

Every case runs in-process (the CLI's `main`, the app through a TestClient; the server's start in a
subprocess) in a folder of prepared inputs, and is classified:

    clear_error   exit 2 and one line "elit CMD: error: ..." (HTTP: a 4xx naming a field), nothing changed
    correct       exit 0 (HTTP 200) and the case's own check of what it produced holds
    refused       a clear error for an input that is legitimate (counts against the yardstick)
    silent_wrong  exit 0 where an error was due, or a result that fails its check
    data_loss     a file that existed before changed or vanished, and the case does not own it
    traceback     an exception out of `main`, exit 1, a "Traceback" (HTTP: a 500)

Groups can be run one by one (`--group`); the JSON file keeps the results of every group run so far.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN = ("model.hidden_size=32 model.depth=3 model.num_heads=2 model.head_depth=1 model.tail_depth=1 "
         "train.global_batch_size=8 log.log_every=5 log.ckpt_every=5 log.sample_per_row=2 log.sample_steps=2 "
         "log.sample_budgets=[1,16] log.progress=false system.threads=1")


@dataclass
class Case:
    group: str
    what: str                      # the command line after `elit`, an HTTP body, or a Python call
    expect: str                    # "error" or "ok"
    check: object = None           # ok cases: a function () -> None that raises AssertionError if wrong
    owns: tuple = ()               # paths an ok case may create or change
    run: object = None             # non-CLI cases: a function () -> (status, message)
    env: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- the prepared inputs
def tiny(num_classes=10, scale=0.05, seed=0, elit_on=True):
    import elit
    import torch
    name = "ELIT-DiT-S/2" if elit_on else "DiT-S/2"
    extra = dict(head_depth=1, tail_depth=1) if elit_on else {}
    model = elit.create_model(name, hidden_size=32, depth=3, num_heads=2, in_channels=1, num_classes=num_classes,
                              input_size=32, **extra).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def build_world(root: pathlib.Path) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import elit
    from elit.cli import main
    sys.path.insert(0, str(REPO / "tests"))
    from test_convert import OTHER, reference_state
    os.chdir(root)
    elit.save_pretrained(tiny(), "tiny")
    elit.save_pretrained(tiny(num_classes=0), "uncond")
    elit.save_pretrained(tiny(elit_on=False), "plain")
    huge = tiny()
    with torch.no_grad():
        for p in huge.parameters():
            p.mul_(1e30)
    elit.save_pretrained(huge, "huge")
    broken = tiny()
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("nan")
    elit.save_pretrained(broken, "nanw")
    shutil.copytree("tiny", "listconfig")
    pathlib.Path("tiny2").mkdir()
    shutil.copytree("tiny", "tiny2/tiny")
    pathlib.Path("listconfig/config.json").write_text("[1, 2]\n")
    shutil.copytree("tiny", "truncweights")
    w = pathlib.Path("truncweights/model.safetensors")
    w.write_bytes(w.read_bytes()[:500])
    for name, size, mode in (("imgs", 32, "L"), ("imgs16", 16, "L"), ("rgbimgs", 32, "RGB"), ("badimgs", 32, "L"),
                             ("mixed", 32, "L")):
        pathlib.Path(name).mkdir()
        for i in range(8):
            pixels = np.random.default_rng(i).integers(0, 255, (size, size, 3) if mode == "RGB" else (size, size))
            Image.fromarray(pixels.astype(np.uint8), mode).save(f"{name}/{i}.png")
    pathlib.Path("badimgs/9.png").write_text("not a png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save("mixed/9.png")
    pathlib.Path("one").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save("one/0.png")
    for name in ("adir", "emptyA", "emptyB", "emptyC"):   # emptyA-C: for commands that may fill them
        pathlib.Path(name).mkdir()
    pathlib.Path("afile").write_text("a file\n")
    pathlib.Path("foreign").mkdir()
    pathlib.Path("foreign/notes.txt").write_text("someone's notes\n")
    pathlib.Path("garbage.npz").write_text("not an npz")
    np.savez("adm.npz", arr_0=np.random.default_rng(0).integers(0, 255, (8, 32, 32, 1)).astype(np.uint8))
    np.savez("user.npz", weights=np.ones(3))
    pathlib.Path("user.json").write_text('{"my": "notes"}\n')
    pathlib.Path("trunc.json").write_text('[{"model": "tiny", "latents_per_group": ')
    pathlib.Path("photo.png").write_bytes(pathlib.Path("imgs/0.png").read_bytes())
    pathlib.Path("notes.safetensors").write_bytes(pathlib.Path("tiny/model.safetensors").read_bytes())
    torch.save({"pos_embed": torch.zeros(1)}, "w.pt")
    pathlib.Path("rand.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    pathlib.Path("text.pt").write_text("hello\n")
    (root / "code.pt").write_bytes(_code_pickle(root / "PWNED"))
    state = reference_state(OTHER)
    save_file(state, "other.safetensors")
    torch.save({"ema": state, "model": state}, "other-ckpt.pt")
    state["x_embedder.proj.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, "nan.safetensors")
    pathlib.Path("elitcfg.json").write_text(json.dumps({"constructor_kwargs": OTHER}))
    pathlib.Path("badcfg.json").write_text(json.dumps({"constructor_kwargs": {**OTHER, "hidden_size": "48"}}))
    pathlib.Path("dupkey.yaml").write_text("model:\n  preset: ELIT-DiT-S/2\ndata:\n  name: fmnist\ntrain:\n"
                                           "  lr: 1.0e-3\n  lr: 2.0e-3\n")
    pathlib.Path("badyaml.yaml").write_text("model: [unclosed\n")
    pathlib.Path("list.yaml").write_text("[1, 2]\n")
    pathlib.Path("empty.yaml").write_text("")
    pathlib.Path("strsection.yaml").write_text("model: big\ndata: {name: fmnist}\n")
    pathlib.Path("badteacher").mkdir()
    pathlib.Path("badteacher/config.json").write_text('{"_class_name": "QwenImageTransformer2DModel"}\n')
    pathlib.Path("oddteacher").mkdir()
    pathlib.Path("oddteacher/config.json").write_text('{"_class_name": "UNet2DConditionModel"}\n')
    elit.save_pretrained(elit.create_model("DiT-S/2", hidden_size=32, depth=3, num_heads=2, in_channels=1,
                                           num_classes=10, input_size=32), "dit32")
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1]:
        assert main("sample --model tiny --out samples --steps 1 --seeds 0-3".split()) == 0
        assert main("ref --data imgs --out ref.npz --metric-net fmnist --quiet".split()) == 0
        assert main(f"train --out run5 --max-steps 5 {TRAIN}".split()) == 0
        assert main("eval --model tiny --ref imgs --num 4 --steps 1 --metrics fd_fmnist --budgets 1 --no-progress "
                    "--json rows.json".split()) == 0
        assert main("plan --model tiny --target-gflops 1 --seeds 0-1 --reference-steps 2 --save-table table.json"
                    .split()) == 0


def _code_pickle(marker: pathlib.Path) -> bytes:
    """A pickle that would create `marker` if anything ever unpickled it with code allowed."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))
    return pickle.dumps({"ema": {"w": Boom()}})


# ---------------------------------------------------------------------- running a case
def snapshot(root: pathlib.Path) -> dict:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.name.endswith(".lock"):
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    from elit.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:   # noqa: BLE001  (a traceback is what the sweep looks for)
            return None, out.getvalue(), err.getvalue() + traceback.format_exc()
    return code, out.getvalue(), err.getvalue()


def classify(case: Case, root: pathlib.Path) -> dict:
    import torch
    before = snapshot(root)
    start = time.perf_counter()
    if case.run is not None:
        status, message = case.run()
        code, out, err = status, "", message
    else:
        with _env(case.env):
            code, out, err = run_cli(case.what.split())
    torch.set_num_threads(1)
    os.chdir(root)
    after = snapshot(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v and not _owned(k, case.owns))
    created = sorted(k for k in after if k not in before and not _owned(k, case.owns))
    lines = [line for line in err.splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    if code is None or code == 1 or "Traceback" in err or code == 500:
        kind = "traceback"
    elif changed:
        kind = "data_loss"
    elif code in (0, 200):
        kind = "correct"
        if case.expect == "error":
            kind = "silent_wrong"
        elif case.check is not None:
            try:
                case.check()
            except AssertionError as e:
                kind, message = "silent_wrong", f"check failed: {e}"
        if created and case.expect == "error":
            message += f" (left {created[:3]})"
    elif code == 2 or (isinstance(code, int) and 400 <= code < 500):
        one_line = case.run is not None or (message.startswith(("elit ", "elit:")) and ": error: " in message
                                             or message.startswith("elit: "))
        kind = "clear_error" if one_line else "unclear_error"
        if created:
            kind, message = "silent_wrong", f"refused but left {created[:3]}: {message}"
        elif case.expect == "ok":
            kind = "refused"
    else:
        kind = "traceback"
    shown = case.what + "".join(f" ({k}={v!r})" for k, v in case.env.items())
    return {"group": case.group, "input": shown, "expect": case.expect, "kind": kind, "status": code,
            "message": (message if kind != "traceback" else err.strip().splitlines()[-1] if err.strip() else "")[:400],
            "changed": changed[:5], "seconds": round(time.perf_counter() - start, 2)}


def _owned(path: str, owns) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in owns)


@contextlib.contextmanager
def _env(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def exists(*paths):
    def check():
        for p in paths:
            assert pathlib.Path(p).exists(), f"{p} missing"
    return check


def pngs(folder, n):
    def check():
        found = sorted(pathlib.Path(folder).glob("0*.png"))
        assert len(found) == n, f"{len(found)} PNGs in {folder}, expected {n}"
    return check


# ---------------------------------------------------------------------- the cases
def sample_cases():
    E, O = "error", "ok"
    c = [(f"sample --model tiny --out s --seeds {v}", E) for v in
         ("-", "1-", "-5", "0--3", "5-2", "3,1", "1,1", "a", "0-99999999999", "0-2000000", "99999999999999999999",
          "1e3", "0x10", ",", "1,,2")]
    c += [(f"sample --model tiny --out s --budget {v}", E) for v in ("0", "-1", "99", "1.5", "nan", "inf", "lots", "0.0",
                                                                      "-0.5", "")]
    c += [(f"sample --model tiny --out s --steps {v}", E) for v in ("0", "-1", "1.5", "1e9", "ten")]
    c += [(f"sample --model tiny --out s {v}", E) for v in (
        "--guidance pag --scale 1", "--guidance cfg", "--scale 1", "--guidance cfg --scale nan",
        "--guidance cfg --scale inf", "--guidance cfg --scale 1 --w 2", "--weak-budget 1",
        "--guidance ccfg --scale 1 --weak-budget 99", "--guidance ccfg --scale 1 --weak-budget 0",
        "--guidance ccfg --scale 1 --weak-budget abc", "--guidance ag --scale 1 --budget 1",
        "--guidance cfg --scale 1 --weak-budget 1", "--guidance cfg --scale 1 --interval 0.9,0.1",
        "--guidance cfg --scale 1 --interval a,b", "--labels -1", "--labels 11", "--labels 1,2 --seeds 0-2",
        "--labels x", "--shift -1", "--shift 0", "--shift inf", "--shift nan", "--cache -1", "--cache nan",
        "--batch-size 0", "--dtype float64", "--device cuda:0", "--device meta", "--device mps", "--device tpu",
        "--sampler ddim", "--sampler rk4", "--schedule 99@0.5,1", "--schedule 4@2,1", "--schedule x",
        "--budget 2 --schedule 4@0.5,1", "--vae nowhere", "--bogus", "--guidance cfg --scale 1e300 --steps 1 --seeds 0")]
    c += [(f"sample --model {m} --out s", E) for m in ("missing", "afile", "adir", "nanw", "listconfig", "truncweights",
                                                       "huge --steps 1 --seeds 0")]
    c += [("sample --model uncond --out s --labels 3", E), ("sample --model uncond --out s --labels null", E),
          ("sample --model uncond --out s --guidance cfg --scale 1", E), ("sample --model plain --out s --budget 2", E),
          ("sample --model plain --out s --guidance ccfg --scale 1", E)]
    c += [(f"sample --model tiny --out {o}", E) for o in ("afile", "foreign", "/proc/self", "tiny", "imgs", "/",
                                                          "samples --steps 3", "samples --seeds 0-3 --labels 1",
                                                          "afile/sub", "foreign --overwrite")]
    cases = [Case("sample", a, e) for a, e in c]
    ok = [("sample --model tiny --out ok1 --steps 1 --seeds 0", "ok1", pngs("ok1", 1)),
          ("sample --model tiny --out ok2 --steps 1 --seeds 7,9 --grid --npz", "ok2",
           exists("ok2/000007.png", "ok2/grid.png", "ok2/samples_2x32x32x1.npz")),
          ("sample --model tiny --out ok3 --steps 2 --seeds 0-1 --guidance CCFG --scale 0.5 --budget 2", "ok3",
           pngs("ok3", 2)),
          ("sample --model tiny --out ok4 --steps 1 --seeds 0-1 --budget full --sampler heun --dtype bfloat16", "ok4",
           pngs("ok4", 2)),
          ("sample --model tiny --out ok5 --steps 1 --seeds 0 --labels null", "ok5", pngs("ok5", 1)),
          ("sample --model tiny --out ok6 --steps 1 --seeds 0-0 --budget 0.5 --cache 0.1", "ok6", pngs("ok6", 1)),
          ("sample --model tiny --out samples --steps 1 --seeds 0-5", "samples", pngs("samples", 6)),
          ("sample --model tiny --out samples --steps 3 --seeds 0 --overwrite", "samples", pngs("samples", 1)),
          ("sample --model tiny --out ok7 --steps 1 --seeds 0-1 --guidance cfg --scale -0.5", "ok7", pngs("ok7", 2)),
          ("sample --model tiny --out ok8 --steps 1 --seeds 0-1 --schedule 1@0.5,full", "ok8", pngs("ok8", 2)),
          ("sample --model tiny --out emptyA --steps 1 --seeds 0", "emptyA", pngs("emptyA", 1)),
          ("sample --model uncond --out ok9 --steps 1 --seeds 0-1 --guidance ag --scale 1", "ok9", pngs("ok9", 2)),
          ("sample --model plain --out ok10 --steps 1 --seeds 0", "ok10", pngs("ok10", 1)),
          ("sample --model tiny --out new/deep/ok11 --steps 1 --seeds 3 --labels 4", "new", pngs("new/deep/ok11", 1))]
    cases += [Case("sample", a, "ok", check, (own,)) for a, own, check in ok]
    return cases


def fid_ref_cases():
    E = "error"
    fid = [f"fid {v} --metric-net fmnist --quiet" for v in (
        "imgs missing", "afile imgs", "adir imgs", "garbage.npz imgs", "user.npz imgs", "badimgs imgs", "mixed imgs",
        "imgs imgs --num 0", "rgbimgs imgs", "imgs16 imgs", "imgs imgs --batch-size 0", "imgs imgs --device tpu", "imgs imgs --num -1",
        "tiny imgs", "imgs fmnist-valid", "imgs", "imgs imgs imgs", "imgs imgs --fd-method svd")]
    fid.append("fid imgs imgs --metric-net resnet")
    cases = [Case("fid", a, E) for a in fid]

    def close_to_zero():
        pass
    for a in ("fid imgs imgs --metric-net fmnist --quiet", "fid ref.npz imgs --metric-net fmnist --quiet --json",
              "fid imgs adm.npz --metric-net fmnist --quiet --fd-method eigh", "fid ok3 imgs --metric-net fmnist --quiet",
              "fid imgs imgs --num 4 --metric-net fmnist --quiet"):
        cases.append(Case("fid", a, "ok"))
    ref = [f"ref --data {v} --metric-net fmnist --quiet" for v in (
        "imgs --out adm.npz", "imgs --out user.npz", "imgs --out garbage.npz", "imgs --out afile", "imgs --out adir",
        "imgs --out r.NPZ", "imgs --out /proc/self/r.npz", "imgs --out afile/r.npz", "missing --out r.npz",
        "afile --out r.npz", "adir --out r.npz", "badimgs --out r.npz", "imgs --out r.npz --num 0",
        "ref.npz --out r.npz", "imgs --out photo.png", "imgs --out tiny/model.safetensors")]
    cases += [Case("ref", a, E) for a in ref]
    for a, own in (("ref --data imgs --out ref.npz --metric-net fmnist --quiet", "ref.npz"),
                   ("ref --data imgs --out new2/r.npz --metric-net fmnist --quiet --keep-features", "new2"),
                   ("ref --data adm.npz --out r2.npz --metric-net fmnist --quiet", "r2.npz"),
                   ("ref --data imgs --out r3.npz --num 2 --metric-net fmnist --quiet", "r3.npz"),
                   ("ref --data imgs --out samples/x.npz --metric-net fmnist --quiet", "samples/x.npz")):
        cases.append(Case("ref", a, "ok", exists(own), (own,)))
    return cases


def flops_plan_cases():
    E = "error"
    flops = [f"flops {v}" for v in (
        "--model ELIT-DiT-Q/2", "--model missing", "--model afile", "--model DiT-S/2 --budgets 1",
        "--model ELIT-DiT-S/2 --budgets 0", "--model ELIT-DiT-S/2 --budgets x", "--model ELIT-DiT-S/2 --input-size 7",
        "--model ELIT-DiT-S/2 --input-size 0", "--model ELIT-DiT-S/2 --steps 0",
        "--model ELIT-DiT-S/2 --steps 4 --weak-budget 1", "--model ELIT-DiT-S/2 --input-size 512 --budgets 16",
        "--model ELIT-DiT-S/2 --steps 4 --guidance ag --weak-budget 16", "--model ELIT-DiT-S/2 --schedule 99@0.5,1 --steps 4",
        "--model tiny --budgets 99", "--model nanw --budgets 1 --no-measure", "--model listconfig")]
    cases = [Case("flops", a, E if "nanw" not in a else "ok") for a in flops]
    for a in ("flops --model tiny --no-measure", "flops --model ELIT-DiT-S/2 --budgets 1,16 --no-measure --json",
              "flops --model tiny --budgets 1,4 --steps 4 --guidance ccfg --no-measure", "flops --model DiT-S/2 --no-measure",
              "flops --model ELIT-DiT-S/2 --steps 4 --guidance cfg --no-measure",
              "flops --model ELIT-DiT-S/2 --input-size 512 --budgets 256 --no-measure"):
        cases.append(Case("flops", a, "ok"))
    plan = [f"plan --model {v}" for v in (
        "tiny --target-gflops 0", "tiny --target-gflops nan", "tiny --target-gflops inf", "tiny --target-gflops -1",
        "tiny", "tiny --target-gflops 1 --target-seconds 1", "plain --target-gflops 1", "missing --target-gflops 1",
        "tiny --target-gflops 1 --table missing.json", "tiny --target-gflops 1 --table user.json",
        "tiny --target-gflops 1 --table trunc.json", "tiny --target-gflops 1 --table photo.png",
        "tiny --target-gflops 1 --table table.json --table-model x",
        "tiny --target-gflops 1 --table table.json --save-table user.json",
        "tiny --target-gflops 1 --table table.json --save-table photo.png",
        "tiny --target-gflops 1 --table table.json --save-table adir", "tiny --target-gflops 1 --seeds x",
        "tiny --target-gflops 1 --reference-steps 0", "tiny --target-gflops 0.0000001 --table table.json")]
    cases += [Case("plan", a, E) for a in plan]
    for a, own in (("plan --model tiny --target-gflops 1 --table table.json", ()),
                   ("plan --model tiny --target-gflops 1 --table table.json --save-table table.json", ("table.json",)),
                   ("plan --model tiny --target-gflops 1000 --table table.json --json", ())):
        cases.append(Case("plan", a, "ok", owns=own))
    return cases


def eval_cases():
    E = "error"
    base = "eval --model tiny --ref imgs --num 4 --steps 1 --metrics fd_fmnist --no-progress"
    bad = [f"{base} {v}" for v in (
        "--json imgs/0.png", "--json user.json", "--json trunc.json", "--json adir", "--json tiny/config.json",
        "--plot photo.png", "--plot adir", "--budgets 99", "--budgets x", "--guidance best", "--scales high",
        "--metrics fidd", "--num 1", "--steps 0", "--seed-start -1", "--device tpu", "--weak-budget 0",
        "--sampler ddim", "--ref missing", "--ref garbage.npz", "--ref user.npz", "--json /proc/self/rows.json")]
    cases = [Case("eval", a, E) for a in bad]
    cases += [Case("eval", f"{base} --budgets 1 --num 8 --json rows.json", E),            # rows of --num 4
              Case("eval", f"{base} --budgets 1 --seed-start 3 --json rows.json", E),
              Case("eval", f"{base} --budgets 1 --model tiny2/tiny --json rows.json", E),   # two models 'tiny'
              Case("eval", f"{base.replace('--model tiny', '--model tiny=uncond')} --budgets 1 --json rows.json", E),
              Case("eval", "eval --model missing --ref imgs", E), Case("eval", "eval --model tiny", E),
              Case("eval", f"{base.replace('tiny', 'nanw')}", E)]
    ok = [(f"{base} --budgets 1", ()), (f"{base} --budgets 1 --json rows.json", ("rows.json",)),
          (f"{base} --budgets 1,4 --json new-rows.json --plot new-plot.png", ("new-rows.json", "new-plot.png")),
          (f"{base} --budgets 4 --guidance ccfg --scales 0.5 --json rows.json", ("rows.json",)),
          (f"{base} --budgets 1 --plot new-plot.png", ("new-plot.png",)),
          (f"eval --model a=tiny --model b=tiny --ref imgs --num 4 --steps 1 --metrics fd_fmnist --no-progress --budgets 1",
           ())]
    cases += [Case("eval", a, "ok", owns=own) for a, own in ok]
    return cases


def train_cases():
    E = "error"
    t = f"train --out r --max-steps 2 {TRAIN}"
    bad = [f"{t} {v}" for v in (
        "train.lr=nan", "train.lr=0", "train.lr=fast", "train.lr=[1", "train.lr=1e400", "train.betas=[2,3]",
        "train.betas=0.9", "train.max_steps=2.5", "train.max_steps=true", "train.seed=-1", "train.seed=1.5",
        "train.budget_draw=99", "train.budget_draw=some", "train.budget_draw=true", "train.budget_min=0", "train.budget_max=99",
        "train.global_batch_size=0", "train.global_batch_size=2.5", "train.time_distribution=normal",
        "train.class_dropout_prob=1", "train.ema_decay=1", "train.warmup_steps=-1", "train.lr_schedule=linear",
        "train.grad_clip=-1", "log.sample_steps=0", "log.log_every=0", "log.progress=maybe",
        "log.sample_budgets=[0]", "log.sample_budgets=4", "log.keep_last=0", "system.threads=-3",
        "system.device=tpu", "system.device=cuda", "system.parallel=zero", "system.precision=fp8",
        "system.num_workers=-1", "train.lrr=1", "optim.lr=1", "lr=1", "train.lr", "model.hidden_size=33",
        "model.window=[3,3]", "model.in_channels=3", "model.num_classes=-1", "model.depth=2", "model.preset=nope",
        "data.name=nope", "data.root=nowhere", "model.prediction=epsilon", "train.lr={a: 1, a: 2}")]
    bad += [f"train --out r --max-steps {v}" for v in ("0", "-5", "2.5", "x")]
    bad += [f"train --out r --max-steps 5 {TRAIN} train.max_steps={v}" for v in ("2.5", "true", "7", "5")]
    bad += [f"train --config {c} --out r" for c in ("nope", "dupkey.yaml", "badyaml.yaml", "list.yaml",
                                                    "strsection.yaml", "afile", "adir")]
    bad += [f"train --out {o} --max-steps 2 {TRAIN}" for o in ("afile", "foreign", "tiny", "/proc/self/run")]
    bad += [f"train --out run5 --max-steps {n} {TRAIN} {v}".strip() for n, v in (
        ("3", ""), ("8", "model.hidden_size=48"), ("8", "model.window=[2,2]"), ("8", "train.global_batch_size=4"))]
    cases = [Case("train", a, E) for a in bad]
    cases += [Case("train", "train --config empty.yaml --out r --max-steps 2", E),
              Case("train", "train --out r --max-steps 2 --print-config model.hidden_size=32 model.hidden_size=48", "ok"),
              Case("train", f"train --out ok-run --max-steps 2 {TRAIN}", "ok", exists("ok-run/model/model.safetensors"),
                   ("ok-run",)),
              Case("train", f"train --out run5 --max-steps 5 {TRAIN}", "ok", exists("run5/model"), ("run5",)),
              Case("train", f"train --out run5 --max-steps 7 {TRAIN} train.lr=1e-3", "ok",
                   exists("run5/checkpoints/step-0000007.pt"), ("run5",)),
              Case("train", f"train --out r-gbs3 --max-steps 2 {TRAIN} train.global_batch_size=3", "ok",
                   exists("r-gbs3/model"), ("r-gbs3",)),
              Case("train", f"train --out emptyB --max-steps 2 {TRAIN} system.threads=0", "ok",
                   exists("emptyB/model"), ("emptyB",))]
    ft = [f"finetune {v}" for v in (
        "--config fmnist-t2i --out r", "--teacher nope --config fmnist-t2i --out r",
        "--teacher tiny --config fmnist-t2i --out r", "--teacher badteacher --config fmnist-t2i --out r",
        "--teacher oddteacher --config fmnist-t2i --out r", "--teacher dit32 --config nope --out r",
        "--teacher dit32 --config fmnist-elit-dit --out r",
        "--teacher dit32 --config fmnist-elit-dit --out r model.hidden_size=32 model.depth=3 model.num_heads=2 "
        "finetune.teacher=tiny",
        "--teacher dit32 --config fmnist-elit-dit --out r --max-steps 2 train.max_steps=3",
        "--teacher dit32 --config fmnist-elit-dit --out r model.hidden_size=32 model.depth=3 model.num_heads=2 "
        "model.elit=false", "--teacher dit32 --config dupkey.yaml --out r",
        "--teacher dit32 --config fmnist-elit-dit --out foreign model.hidden_size=32 model.depth=3 model.num_heads=2 "
        "model.head_depth=1 model.tail_depth=1")]
    cases += [Case("finetune", a, E) for a in ft]
    cases.append(Case("finetune", "finetune --teacher dit32 --config fmnist-elit-dit --out ft-ok --max-steps 2 "
                      "model.hidden_size=32 model.depth=3 model.num_heads=2 model.head_depth=1 model.tail_depth=1 "
                      "train.global_batch_size=8 log.sample_budgets=[1,16] log.sample_steps=2 log.sample_per_row=2 "
                      "log.progress=false system.threads=1", "ok", exists("ft-ok/model/model.safetensors"), ("ft-ok",)))
    return cases


def convert_cases():
    E = "error"
    c = "convert --from authors-elit --config elitcfg.json"
    bad = [f"convert {v}" for v in (
        "--weights w.pt --preset DiT-S/2 --out c", "--from dit --weights w.pt --out c",
        "--from dit --weights w.pt --preset DiT-Q/2 --out c", "--from dit --weights w.pt --preset U-ViT-L/2 --out c",
        "--from uvit --weights w.pt --preset DiT-XL/2 --out c", "--from dit --weights w.pt --preset DiT-S/2",
        "--from dit --weights missing.pt --preset DiT-S/2 --out c", "--from dit --weights adir --preset DiT-S/2 --out c",
        "--from dit --weights rand.pt --preset DiT-S/2 --out c", "--from dit --weights text.pt --preset DiT-S/2 --out c",
        "--from dit --weights code.pt --preset DiT-S/2 --out c", "--from dit --weights w.pt --preset DiT-S/2 --out c",
        "--from sd --weights w.pt --preset DiT-S/2 --out c", "--from dit --weights garbage.npz --preset DiT-S/2 --out c",
        "--from authors-elit --weights other.safetensors --config badcfg.json --out c",
        "--from authors-elit --weights other.safetensors --config user.json --out c",
        "--from authors-elit --weights other.safetensors --config trunc.json --out c",
        "--from authors-elit --weights other.safetensors --config missing.json --out c",
        "--from authors-sit --weights other.safetensors --config elitcfg.json --out c --min-budget 0",
        "--from uvit --weights other.safetensors --preset U-ViT-H/2 --out c --min-budget 2")]
    bad += [f"{c} --weights {w} --out {o}" for w, o in (
        ("nan.safetensors", "c"), ("other.safetensors", "tiny"), ("other.safetensors", "foreign"),
        ("other.safetensors", "afile"), ("other.safetensors", "/proc/self"), ("other.safetensors", "foreign --overwrite"),
        ("other.safetensors", "c --min-budget 99"), ("notes.safetensors", "c"), ("tiny", "c"))]
    cases = [Case("convert", a, E) for a in bad]
    for a, own in ((f"{c} --weights other.safetensors --out conv1", "conv1"),
                   (f"{c} --weights other-ckpt.pt --out conv2 --min-budget 3", "conv2"),
                   (f"{c} --weights other.safetensors --out conv1 --overwrite --min-budget 2", "conv1"),
                   (f"{c} --weights other.safetensors --out emptyC", "emptyC"),
                   ("convert --list-presets", "")):
        cases.append(Case("convert", a, "ok", exists(own) if own else None, (own,) if own else ()))
    cases.append(Case("convert", f"{c} --weights other.safetensors --out conv1", E))   # exists now: needs --overwrite
    cases.append(Case("convert", "code.pt never ran", "ok", run=lambda: (0 if not pathlib.Path("PWNED").exists() else 1,
                                                                        "")))
    return cases


def misc_cases():
    E = "error"
    misc = ["bogus", "sample", "train-classifier --out adir", "train-classifier --out c.pt",
            "train-classifier --out photo.png", "train-classifier --out notes.safetensors --epochs 1",
            "train-classifier --out c.safetensors --epochs 0", "train-classifier --out c.safetensors --threads 0",
            "extract-latents --vae v --data imgs --out lat --batch-size 0", "extract-latents --vae v --data imgs --out afile",
            "extract-latents --vae v --data imgs --out foreign", "extract-latents --vae v --data imgs --out lat --device tpu",
            "extract-latents --vae missing-vae --data imgs --out lat", "extract-latents --vae v --data missing --out lat",
            "extract-latents --vae v --data imgs --out lat --image-size 4"]
    cases = [Case("misc", a, E) for a in misc]
    cases += [Case("misc", "--version", "ok"), Case("misc", "--help", "ok"), Case("misc", "sample --help", "ok")]
    return cases


def serve_start_cases(root: pathlib.Path):
    E = "error"
    bad = [f"serve --model tiny {v}" for v in (
        "--host 0.0.0.0", "--host ::", "--host 192.0.2.1", "--api-key=", "--port 70000", "--port -1", "--port x",
        "--host nohost.invalid", "--max-images 20 --max-batch 4", "--steps 0", "--steps 200", "--replicas 2",
        "--dtype float64", "--headroom -1")]
    cases = [Case("serve", a, E) for a in bad]
    cases += [Case("serve", "serve --model tiny", E, env={"ELIT_API_KEY": ""})]
    cases += [Case("serve", "serve --model missing", E), Case("serve", "serve --model nanw", E),
              Case("serve", "serve --model tiny --host 0.0.0.0 --model missing", E, env={"ELIT_API_KEY": "k"})]
    for extra, url_host in (("--port 0", "127.0.0.1"), ("--port 0 --host 0.0.0.0 --insecure-no-api-key", "0.0.0.0"),
                            ("--port 0 --host localhost --api-key k", "127.0.0.1")):
        cases.append(Case("serve", f"serve --model tiny {extra} (subprocess: prints its port, answers there)", "ok",
                          run=lambda extra=extra, h=url_host: _serve_subprocess(root, extra, h)))
    return cases


def _serve_subprocess(root, extra, host):
    import httpx
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("ELIT_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "elit", "serve", "--model", "tiny", "--steps", "2", "--threads", "1",
                             *extra.split()], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = []
        while not any("http://" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                return 1, "".join(lines)
            lines.append(line)
        port = int(lines[-1].split(f"http://{host}:")[1].split("/")[0])
        headers = {"X-API-Key": "k"} if "--api-key" in extra else {}
        for _ in range(300):
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/images", json={"seed": 1}, headers=headers, timeout=30)
                return (200 if r.status_code == 200 and port != 0 else 1), lines[-1].strip()
            except httpx.TransportError:
                time.sleep(0.1)
        return 1, "no answer"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def http_cases():
    E = "error"
    bodies = [
        {"budget": 99}, {"budget": 0}, {"budget": "half"}, {"budget": 2.0}, {"budget": True}, {"budget": "FULL"},
        {"budget": 2, "deadline_ms": 100}, {"deadline_ms": -5}, {"deadline_ms": 0}, {"deadline_ms": "500"},
        {"deadline_ms": "1e3"}, {"deadline_ms": True}, {"deadline_ms": 1e9}, {"deadline_ms": None, "budget": None,
                                                                               "seed": "1"},
        {"steps": 0}, {"steps": 101}, {"steps": 2.0}, {"steps": "2"}, {"steps": True}, {"seed": -1}, {"seed": 10 ** 30},
        {"seed": 2 ** 32 - 1, "num_images": 2}, {"seed": 1.5}, {"seed": "7"}, {"label": 10}, {"label": -1},
        {"label": "Sandal"}, {"label": True}, {"label": 1.0}, {"label": [1]}, {"num_images": 0}, {"num_images": 9},
        {"num_images": True}, {"guidance": "pag"}, {"guidance": "CFG"}, {"guidance": "cfg", "scale": "2"},
        {"guidance": "cfg", "scale": True}, {"guidance": "cfg", "scale": 1e300}, {"guidance": "cfg", "scale": 1e308},
        {"guidance": "cfg", "scale": -1}, {"guidance": "cfg", "scale": 101}, {"scale": 1}, {"weak_budget": 1},
        {"weak_budget": 1, "deadline_ms": 1000}, {"guidance": "cfg", "scale": 1, "weak_budget": 1},
        {"guidance": "ccfg", "scale": 1, "weak_budget": 99}, {"guidance": "ag", "scale": 1, "budget": 1},
        {"prompt": "a cat"}, {"model": "other"}, {"model": 3}, {"colour": "red"}, {"format": "jpeg"}, {"format": 1},
        {"sampler": "rk4"}, {"sampler": None}, [1, 2], "seed", 3, None]
    raw = [b"{not json", b'{"seed": NaN}', b'{"seed": Infinity}', b"\xff\xfe", b'{"seed": 1e400}', b"",
           b"[" * 4000 + b"]" * 4000, b'{"seed": ' + b"[" * 4000 + b"]" * 4000 + b"}", b'{"a": {"b": {"c": {"d": {}}}}}',
           b'{"seed": 1, "seed": 2}', b'{"label": "' + b"x" * 9000 + b'"}']
    cases = [Case("http", f"POST /v1/images {json.dumps(b)}", E, run=_http(b)) for b in bodies]
    cases += [Case("http", f"POST /v1/images {r[:40]!r}{'...' if len(r) > 40 else ''}", E, run=_http(r)) for r in raw]
    cases += [Case("http", "POST /v1/images without the key", E, run=_http({"seed": 1}, key=None)),
              Case("http", "POST /v1/images with a wrong key", E, run=_http({"seed": 1}, key="wrong")),
              Case("http", "GET /v1/models with a wrong key", E, run=_http(None, key="wrong", path="/v1/models"))]
    ok = [{"seed": 1}, {"seed": 2, "budget": 1}, {"seed": 3, "budget": "full", "label": "3"},
          {"seed": 4, "guidance": "ccfg", "scale": 0.5}, {"seed": 5, "deadline_ms": 60000},
          {"seed": 6, "num_images": 2, "format": "json"}, {"seed": 7, "guidance": "cfg", "scale": 100},
          {"seed": 8, "guidance": "ag", "scale": 1, "budget": 4, "weak_budget": 2}, {"seed": 9, "deadline_ms": 1000.5},
          {"seed": 2 ** 32 - 1}, {"seed": 0, "steps": 1, "sampler": "heun"}]
    cases += [Case("http", f"POST /v1/images {json.dumps(b)}", "ok", run=_http(b)) for b in ok]
    return cases


_CLIENT = {}


def _http(body, key="k", path="/v1/images"):
    def run():
        client = _client()
        headers = {} if key is None else {"X-API-Key": key}
        if path != "/v1/images":
            r = client.get(path, headers=headers)
        elif isinstance(body, bytes):
            r = client.post(path, content=body, headers=headers)
        else:
            r = client.post(path, content=json.dumps(body), headers=headers)
        if r.status_code >= 500:
            return r.status_code, r.text
        if r.status_code >= 400:
            error = r.json().get("error", {})
            return r.status_code, f"{r.status_code} {error.get('field')}: {error.get('message')}"
        ok = r.headers.get("content-type", "").startswith(("image/png", "application/json"))
        return (200 if ok else 1), r.headers.get("x-elit-budget", "")
    return run


def _client():
    if "c" not in _CLIENT:
        from fastapi.testclient import TestClient

        import elit
        from elit.serve.app import create_app
        from elit.serve.costmodel import CostModel
        from elit.serve.service import ModelService
        service = ModelService("tiny", elit.load_pretrained("tiny"), default_steps=2, cost=CostModel(0.001, 0.01))
        _CLIENT["c"] = TestClient(create_app([service], api_key="k"))
        _CLIENT["c"].__enter__()
    return _CLIENT["c"]


def api_cases():
    import torch

    import elit

    def call(fn):
        def run():
            try:
                fn()
            except ValueError as e:   # UserError is a ValueError
                from elit.errors import UserError
                return (2 if isinstance(e, UserError) else 1), str(e)
            return 0, ""
        return run
    m = lambda: elit.load_pretrained("tiny")   # noqa: E731
    bad = {
        "elit.sample(m, seeds=range(10**12))": lambda: elit.sample(m(), seeds=range(10 ** 12)),
        "elit.sample(m, [0], weak_budget=1)": lambda: elit.sample(m(), [0], steps=1, weak_budget=1),
        "elit.sample(m, [0], guidance='cfg', scale=float('nan'))": lambda: elit.sample(m(), [0], guidance="cfg",
                                                                                       scale=float("nan")),
        "elit.sample(m, [-1])": lambda: elit.sample(m(), [-1]),
        "elit.sample(m, [0], budget='4')": lambda: elit.sample(m(), [0], budget="4"),
        "elit.sample(m, [0], steps=0)": lambda: elit.sample(m(), [0], steps=0),
        "elit.load_pretrained('afile')": lambda: elit.load_pretrained("afile"),
        "elit.load_pretrained('truncweights')": lambda: elit.load_pretrained("truncweights"),
        "elit.create_model('ELIT-DiT-S/2', depth=0)": lambda: elit.create_model("ELIT-DiT-S/2", depth=0),
        "elit.create_model('ELIT-DiT-S/2', bogus=1)": lambda: elit.create_model("ELIT-DiT-S/2", bogus=1),
        "model(x, t, y, budget=99)": lambda: m()(torch.randn(1, 1, 32, 32), torch.rand(1), torch.tensor([1]), budget=99),
        "convert_checkpoint('dit', 'rand.pt', preset='DiT-S/2')": lambda: __import__(
            "elit.interop.convert", fromlist=["x"]).convert_checkpoint("dit", "rand.pt", preset="DiT-S/2"),
        "run_sweep(..., json_path='user.json')": lambda: __import__("elit.eval.sweep", fromlist=["x"]).run_sweep(
            {"t": m()}, {"t": []}, num=2, steps=1, sampler="euler", metrics=("fd_fmnist",), ref="imgs",
            json_path="user.json"),
    }
    cases = [Case("python", k, "error", run=call(v)) for k, v in bad.items()]
    cases.append(Case("python", "elit.sample(m, range(2), steps=1)", "ok", run=call(lambda: elit.sample(m(), range(2),
                                                                                                      steps=1))))
    return cases


GROUPS = {"sample": lambda root: sample_cases(), "fid-ref": lambda root: fid_ref_cases(),
          "flops-plan": lambda root: flops_plan_cases(), "eval": lambda root: eval_cases(),
          "train": lambda root: train_cases(), "convert": lambda root: convert_cases(),
          "misc": lambda root: misc_cases(), "serve": serve_start_cases, "http": lambda root: http_cases(),
          "python": lambda root: api_cases()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="a folder for the prepared inputs (created, reused)")
    ap.add_argument("--json", default=None, help="results file (merged across --group runs)")
    ap.add_argument("--group", action="append", choices=list(GROUPS), help="run only these groups")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(1)
    root = pathlib.Path(args.work).resolve()
    args.json = args.json and str(pathlib.Path(args.json).resolve())   # the cases run inside root
    fresh = not (root / ".built").exists()
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        build_world(root)
        (root / ".built").write_text("")
    os.chdir(root)
    results = json.loads(pathlib.Path(args.json).read_text()) if args.json and pathlib.Path(args.json).is_file() else {}
    results = results.get("cases", {}) if isinstance(results, dict) else {}
    for group in args.group or list(GROUPS):
        rows = [classify(case, root) for case in GROUPS[group](root)]
        results[group] = rows
        counts = _counts(rows)
        print(f"{group}: {len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v), flush=True)
        for r in rows:
            if r["kind"] not in ("clear_error", "correct"):
                print(f"   {r['kind']}: elit {r['input']} -> {r['status']} {r['message'][:200]}", flush=True)
    every = [r for rows in results.values() for r in rows]
    summary = {"cases": len(every), **_counts(every)}
    summary["clear_or_correct"] = round((summary["clear_error"] + summary["correct"]) / max(1, len(every)), 4)
    print("all groups so far: " + json.dumps(summary))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"summary": summary, "cases": results}, indent=1) + "\n")
    return 0


def _counts(rows) -> dict:
    kinds = ("clear_error", "correct", "refused", "unclear_error", "silent_wrong", "data_loss", "traceback")
    return {k: sum(r["kind"] == k for r in rows) for k in kinds}


if __name__ == "__main__":
    sys.exit(main())
