"""`torchrun --nproc_per_node=2 -m elit sample|eval` with two real gloo processes writes what one process
writes: byte-identical PNGs, grid and .npz, and the same sweep rows."""
import json
import os
import subprocess
import sys

import pytest

from elit.cli import main
from elit.sampling.distributed import Shards
from conftest import needs_fmnist
from test_evaluate import tiny

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(autouse=True)
def one_thread_everywhere(monkeypatch):
    """The same count in the one process and in each rank (the thread count changes how sums split),
    whatever the caller's environment says: ELIT_THREADS outranks OMP_NUM_THREADS."""
    monkeypatch.setenv("ELIT_THREADS", "1")


def torchrun(args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # "--": torchrun would read --num as an abbreviation of its own --numa-binding
    proc = subprocess.run(TORCHRUN + ["-m", "elit", "--"] + args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_batches_are_dealt_whole_and_in_turn():
    seeds = list(range(11))                 # batches of 3: [0-2] [3-5] [6-8] [9-10]
    assert Shards(0, 2).mine(seeds, None, 3) == ([0, 1, 2, 6, 7, 8], None)
    assert Shards(1, 2).mine(seeds, [s * 10 for s in seeds], 3) == ([3, 4, 5, 9, 10], [30, 40, 50, 90, 100])
    assert Shards(2, 3).mine(seeds, None, 3)[0] == [6, 7, 8]
    assert Shards(3, 4).mine(seeds[:6], None, 3)[0] == []      # more ranks than batches: some get none


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    from elit.eval.metrics.compute import compute_reference
    path = tmp_path_factory.mktemp("ref") / "fmnist-ref.npz"
    compute_reference("fmnist-test", net="fmnist", out=str(path), num=200, progress=False)
    return path


def test_torchrun_sample_writes_the_files_one_process_writes(tmp_path):
    model_dir, _ = tiny(tmp_path, "tiny")
    common = ["sample", "--model", str(model_dir), "--seeds", "0-10", "--batch-size", "3", "--steps", "2",
              "--budget", "2", "--guidance", "ccfg", "--scale", "0.5", "--grid", "--npz", "--device", "cpu"]
    one = one_and_two_write_the_same(common, tmp_path)
    assert len([n for n in one if n.endswith(".png")]) == 11 + 1


def test_torchrun_sample_of_prompts_writes_the_files_one_process_writes(tmp_path):
    """A text model's run: each prompt's batches dealt out in turn, every (prompt, seed) file as one process's."""
    from test_prompts import save_text_model
    model_dir = save_text_model(tmp_path / "t2i")
    common = ["sample", "--model", str(model_dir), "--prompt", "a photo of a dress", "--prompt", "a bag", "--seeds",
              "0-4", "--batch-size", "2", "--steps", "2", "--budget", "4", "--guidance", "ccfg", "--scale", "1",
              "--grid", "--npz", "--device", "cpu"]
    one = one_and_two_write_the_same(common, tmp_path)
    assert [n for n in one if n.startswith("p")] == [f"p{k:03d}-s{s:06d}.png" for k in (0, 1) for s in range(5)]


def one_and_two_write_the_same(common, tmp_path) -> list[str]:
    """Run `common` in one process (--out one) and under torchrun (--out two); the same files, byte for byte."""
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    torchrun(common + ["--out", str(tmp_path / "two")])
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in one:
        a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        if name == "sampling.json":     # the record names its own --out
            a, b = (json.loads(x) for x in (a, b))
            a["last_options"].pop("out"), b["last_options"].pop("out")
        assert a == b, name
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert not leftovers     # no staging folder left (the output locks .one.lock / .two.lock stay)
    return one


@needs_fmnist
def test_torchrun_eval_sweep_gives_the_rows_one_process_gives(tmp_path, ref):
    model_dir, _ = tiny(tmp_path, "tiny")
    common = ["eval", "--model", f"e={model_dir}", "--budgets", "1,4", "--num", "20", "--steps", "2",
              "--batch-size", "6", "--ref", str(ref), "--metrics", "fd_fmnist", "--no-progress"]
    assert main(common + ["--json", str(tmp_path / "one.json")]) == 0
    torchrun(common + ["--json", str(tmp_path / "two.json")])
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for row in one + two:
        row.pop("images_per_s")          # a timing
    assert len(one) == 2 and one == two
