"""The video study driver end to end at smoke scale (slow: about two minutes on 2 cores)."""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_video_study_smoke_runs_resumes_and_publishes(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "study_video.py"), "--out", str(tmp_path / "s"), "--smoke"]
    subprocess.run(cmd + ["--publish", str(tmp_path / "docs")], check=True, cwd=REPO)
    rows = json.loads((tmp_path / "docs" / "video.json").read_text())
    assert [(r["model"], r["latents_per_group"]) for r in rows] == [
        ("video-dit", None), ("elit-video", 32), ("elit-video-mb", 32), ("elit-video-mb", 8), ("elit-video-mb", 2)]
    assert all(r["fd_fmnist_clip"] > 0 and r["num_samples"] == 8 for r in rows)
    assert (tmp_path / "docs" / "video" / "samples-elit-video-mb.gif").is_file()
    out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "[train] elit-video-mb: done" in out and "resuming: 5 rows" in out
