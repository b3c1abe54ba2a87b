"""The video study driver: end to end at smoke scale (slow: about two minutes on 2 cores), and its
--publish step, which regenerates video.md's results table (fast)."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, load_script

RESULTS = REPO / "docs" / "results"


def published_doc(dest):
    """video.md and the real-clip JSON copied into a publish folder, as docs/results holds them."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("video.md", "video-reference.json"):
        shutil.copy(RESULTS / name, dest / name)


@pytest.mark.slow
def test_video_study_smoke_runs_resumes_and_publishes(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "study_video.py"), "--out", str(tmp_path / "s"), "--smoke"]
    published_doc(tmp_path / "docs")
    subprocess.run(cmd + ["--publish", str(tmp_path / "docs")], check=True, cwd=REPO)
    rows = json.loads((tmp_path / "docs" / "video.json").read_text())
    dt = load_script("scripts/docs_tables.py")
    reference = json.loads((RESULTS / "video-reference.json").read_text())
    text = (tmp_path / "docs" / "video.md").read_text()
    assert dt.section(text, "video-results") == dt.video_results(rows, reference)
    assert [(r["model"], r["latents_per_group"]) for r in rows] == [
        ("video-dit", None), ("elit-video", 32), ("elit-video-mb", 32), ("elit-video-mb", 8), ("elit-video-mb", 2)]
    assert all(r["fd_fmnist_clip"] > 0 and r["num_samples"] == 8 for r in rows)
    assert (tmp_path / "docs" / "video" / "samples-elit-video-mb.gif").is_file()
    out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "[train] elit-video-mb: done" in out and "resuming: 5 rows" in out


def test_publish_regenerates_the_results_table(tmp_path):
    """--publish writes the table from the rows it publishes (the rest of video.md is left as it is)."""
    study, dt = load_script("scripts/study_video.py"), load_script("scripts/docs_tables.py")
    rows = json.loads((RESULTS / "video.json").read_text())
    rows[0]["fd_fmnist"] = 17.004
    report, out, dest = tmp_path / "report", tmp_path / "out", tmp_path / "docs"
    report.mkdir()
    out.mkdir()
    (report / "video.json").write_text(json.dumps(rows))
    (out / "rows.json").write_text("[]")
    (report / "samples-video-dit.png").write_bytes(b"png")
    published_doc(dest)
    study.publish(report, out, [report / "samples-video-dit.png"], dest)
    text = (dest / "video.md").read_text()
    table = dt.video_results(rows, json.loads((RESULTS / "video-reference.json").read_text()))
    assert "| video DiT | - | 17.00 | 105.11 |" in table and "| real test clips (1000) |" in table
    assert text == dt.fill_doc((RESULTS / "video.md").read_text(), {"video-results": table})
    assert json.loads((dest / "video.json").read_text()) == rows
    assert (dest / "video" / "samples-video-dit.png").read_bytes() == b"png"


def test_publish_into_a_doc_without_markers_writes_nothing(tmp_path):
    study = load_script("scripts/study_video.py")
    report = tmp_path / "report"
    report.mkdir()
    (report / "video.json").write_text((RESULTS / "video.json").read_text())
    (tmp_path / "rows.json").write_text("[]")
    dest = tmp_path / "docs"
    published_doc(dest)
    doc = (dest / "video.md").read_text().replace("<!-- video-results:start -->\n", "")
    (dest / "video.md").write_text(doc)
    with pytest.raises(SystemExit, match="video-results:start"):
        study.publish(report, tmp_path, [], dest)
    assert sorted(p.name for p in dest.iterdir()) == ["video-reference.json", "video.md"]
