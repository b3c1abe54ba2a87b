"""The README's "Using it" blocks, run as written (issue 19), so the README cannot drift from the code.

The blocks continue from the main job, so the test first makes what the main job makes, on a tiny
model: `runs/main-job/model`. To keep it quick, three environment variables the commands honour
point at small stand-ins: ELIT_FMNIST_ROOT at the first 256 training and 128 test images of
Fashion-MNIST, ELIT_INCEPTION_PATH at a small TorchScript network with the FID network's interface
(3x299x299 in, 2048 features out), ELIT_CACHE_DIR at a private cache. Everything else (commands,
options, paths) is the README's text. It needs only the repository and Fashion-MNIST.
"""
import gzip
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_train import needs_fmnist

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TESTED = "<!-- tests/test_readme.py runs this block as written -->"
ARGS_CHECKED = "<!-- tests/test_readme.py runs the training lines on a tiny model and checks the others' arguments -->"
TINY_MODEL = ["model.hidden_size=32", "model.depth=3", "model.num_heads=2", "log.sample_steps=2",
              "log.sample_per_row=2", "log.progress=false", "log.ckpt_every=2", "log.log_every=2"]


def blocks_after(marker: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced block that follows an occurrence of `marker`."""
    fence = re.compile(r"```(\w+)\n(.*?)```", re.S)
    return [fence.search(README, m.end()).groups() for m in re.finditer(re.escape(marker), README)]


def commands(bash: str) -> list[str]:
    """One string per command: continuation lines joined, comments dropped."""
    joined = bash.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def write_idx(path, array: np.ndarray) -> None:
    magic = 0x800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory):
    from elit.data.fashion_mnist import load_fashion_mnist
    root = tmp_path_factory.mktemp("readme")
    data = root / "fmnist"
    data.mkdir()
    for split, prefix, n in (("train", "train", 256), ("test", "t10k", 128)):
        images, labels = load_fashion_mnist(split)
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", images[:n].numpy())
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", labels[:n].numpy())

    class StandIn(torch.nn.Module):   # the FID network's interface: (B, 3, 299, 299) -> (B, 2048)
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * 8 * 8, 2048)

        def forward(self, x):
            return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1))
    torch.manual_seed(0)
    inception = root / "inception-stand-in.pt"
    torch.jit.script(StandIn()).save(str(inception))
    shim = root / "bin"
    shim.mkdir()
    (shim / "elit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m elit "$@"\n')
    (shim / "elit").chmod(0o755)
    env = {**os.environ, "ELIT_FMNIST_ROOT": str(data), "ELIT_INCEPTION_PATH": str(inception),
           "ELIT_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    work = root / "clone"    # the README's commands run here, as from a clone's root
    work.mkdir()
    out = run_main_job(work, env)
    return work, env, out


def run_main_job(work, env) -> str:
    """scripts/main_job.sh without its setup step: its `elit train` line with a tiny model appended,
    then its Python part (the budget grid) as written. Returns its run folder."""
    script = (REPO / "scripts" / "main_job.sh").read_text()
    out = re.search(r"OUT=\$\{OUT:-([^}]+)\}", script).group(1)
    train = re.search(r"^elit train .*$", script, re.M).group(0)
    grid = re.search(r"<<'PY'\n(.*?)^PY$", script, re.S | re.M).group(1)
    env = {**env, "OUT": out, "THREADS": "1"}
    for command in (["bash", "-c", f'{train} --max-steps 4 {" ".join(TINY_MODEL)}', "main_job"],
                    [sys.executable, "-c", grid, out]):
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "budget grid (5 budgets)" in done.stderr and "100/100" in done.stderr   # the grid has a progress bar
    return out


@needs_fmnist
def test_main_job_writes_a_class_labelled_grid_and_reruns(readme_env):
    from PIL import Image
    work, env, out = readme_env
    grid = Image.open(work / out / "budget_grid.png")
    assert grid.height > 5 * 64 and grid.width > 10 * 64              # 5 budgets x 10 classes
    again = run_main_job(work, env)                                    # a rerun resumes, with the grid there
    assert again == out and (work / out / "checkpoints" / "step-0000004.pt").is_file()


def run(command, cwd, env, **kw):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, **kw)


@needs_fmnist
def test_readme_python_block_runs_as_written(readme_env):
    work, env, out = readme_env
    language, code = blocks_after(TESTED)[0]
    assert language == "python" and f'"{out}/model"' in code      # it continues from the main job
    done = run([sys.executable, "-c", code], work, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"torch.Size([8, 1, 32, 32]) torch.Size([8, 1, 32, 32]) {list(range(1, 17))}"


@needs_fmnist
def test_readme_shell_block_runs_as_written(readme_env):
    work, env, out = readme_env
    language, bash = blocks_after(TESTED)[1]
    assert language == "bash"
    assert all(f"{out}/model" in c for c in commands(bash) if c.startswith(("elit flops", "elit sample")))
    done = run(["bash", "-euo", "pipefail", "-c", bash], work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    sample_command = next(c for c in commands(bash) if c.startswith("elit sample"))
    samples = work / re.search(r"--out (\S+)", sample_command).group(1)
    assert len(list(samples.glob("0*.png"))) == 64 and (samples / "grid.png").is_file()
    assert re.search(r"^FID: \d+\.\d+", done.stdout, re.M), done.stdout
    assert "64 vs 128 images" in done.stdout                     # the grid is not measured
    # Nothing lands in the clone's root but runs/ (ignored by git).
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    assert "/runs/" in (REPO / ".gitignore").read_text().split()
    again = run(["bash", "-c", sample_command], work, env)       # the same sample command resumes
    assert again.returncode == 0 and "64 of 64 images already in" in again.stdout, again.stderr


@needs_fmnist
def test_readme_other_commands(readme_env):
    work, env, _ = readme_env
    (language, bash), = blocks_after(ARGS_CHECKED)
    lines = commands(bash)
    assert language == "bash" and any(c.startswith("elit train") for c in lines)
    presets = run([sys.executable, "-m", "elit", "convert", "--list-presets"], work, env).stdout
    for command in lines:
        if command.startswith("elit train"):    # the same command on a tiny model, 2 steps
            done = run(["bash", "-c", f"{command} --max-steps 2 {' '.join(TINY_MODEL)}"], work, env)
            assert done.returncode == 0, done.stderr
        elif command.startswith("elit convert"):   # the checkpoints are downloads: check the arguments
            source = re.search(r"--from (\S+)", command).group(1)
            preset = re.search(r"--preset (\S+)", command).group(1)
            assert re.search(rf"^{re.escape(preset)}\s+--from {source}\s", presets, re.M), command
            weights = re.search(r"--weights (\S+)", command).group(1)
            done = run(["bash", "-c", command], work, env)
            assert done.returncode == 2 and f"weights file {weights} not found" in done.stderr, done.stderr
            assert weights in (REPO / "docs" / "interop.md").read_text()   # and the docs say where it is
        else:
            done = run(["bash", "-c", command], work, env)
            assert done.returncode == 0, done.stderr


def test_elit_help_imports_no_torch():
    code = ("import sys, io, contextlib\nfrom elit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n    main(['--help'])\n"
            "print('torch' in sys.modules, 'sample' in out.getvalue())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.stdout.split() == ["False", "True"]


def test_every_option_has_a_description():
    import argparse
    import importlib

    from elit.cli import COMMANDS, OneLineParser
    missing = []
    for name, (module, _) in COMMANDS.items():
        parser = OneLineParser(prog=f"elit {name}")
        importlib.import_module(f"elit.cli.{module}").add_arguments(parser)
        missing += [f"elit {name} {a.option_strings or a.dest}" for a in parser._actions
                    if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing


def test_help_of_a_model_explains_forward():
    """Issue 19.8: help(model) shows what x, t, y and budget are (shapes, t = 1 is noise)."""
    import pydoc

    import elit
    text = pydoc.render_doc(elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=3, num_heads=2, head_depth=1,
                                              tail_depth=1, in_channels=1, num_classes=10, input_size=16),
                            renderer=pydoc.plaintext)
    assert "forward(self, x:" in text
    assert "x: (B, C, H, W)" in text and "t = 1 is pure noise" in text and "latents kept per group" in text


T2I = "<!-- tests/test_readme.py runs this block as written, the demo at smoke size (--smoke, its first three stages) -->"
T2I_SERVE = "<!-- tests/test_readme.py runs this block as written, on a free port instead of 8000 -->"


@needs_fmnist
def test_readme_text_to_image_blocks_sample_prompts_at_two_budgets_and_serve_one(readme_env):
    """The demo line runs its data, teacher and finetune stages at smoke size (what the block samples: a
    text model carrying its word encoder), the rest as written; then `elit serve` on that model answers
    the block's curl with a PNG and the budget it used."""
    import json
    import socket
    import time

    from PIL import Image
    work, env, _ = readme_env
    (language, bash), = blocks_after(T2I)
    demo = next(c for c in commands(bash) if "t2i_demo.py" in c)
    smoke = (f"for stage in data teacher finetune; do {demo.replace('python scripts/', f'{sys.executable} {REPO}/scripts/')}"
             f" --smoke --stage $stage; done")
    done = run(["bash", "-euo", "pipefail", "-c", bash.replace(demo, smoke, 1)], work, env)
    assert language == "bash" and done.returncode == 0, done.stdout + done.stderr
    for budget in (16, 4):
        out = work / f"runs/t2i-b{budget}"
        assert sorted(p.name for p in out.glob("p*.png")) == [f"p{k:03d}-s{s:06d}.png" for k in range(3) for s in range(4)]
        assert Image.open(out / "grid.png").width > 3 * 64
        record = json.loads((out / "sampling.json").read_text())["settings"]
        assert f"budget {budget}, guidance ccfg" in record["plan"] and record["prompts"][1] == "a photo of a sneaker"

    (language, serve), = blocks_after(T2I_SERVE)
    start, curl = commands(serve)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["bash", "-c", f"exec {start} --port {port}"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):
            if run(["curl", "-sf", f"127.0.0.1:{port}/healthz"], work, env).returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        done = run(["bash", "-euo", "pipefail", "-c", curl.replace("127.0.0.1:8000", f"127.0.0.1:{port}")], work, env)
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    assert done.returncode == 0 and done.stdout.strip().lower() == "x-elit-budget: 4", done.stdout + log
    assert Image.open(work / "runs" / "sneaker.png").size == (32, 32)
