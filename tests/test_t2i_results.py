"""The committed text-to-image demo results: the page is generated from the JSON (no hand-edited
numbers), every setting of the demo's plan was measured, and the costs follow elit's FLOP counts."""
import json
import sys

import pytest

from conftest import REPO

RESULTS = REPO / "docs" / "results"
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="module")
def result():
    path = RESULTS / "text-to-image.json"
    if not path.is_file():
        pytest.skip("no committed demo results (python scripts/t2i_demo.py --out runs/t2i)")
    return json.loads(path.read_text())


def test_the_page_is_generated_from_the_json(result):
    from t2i_report import markdown
    assert (RESULTS / "text-to-image.md").read_text() == markdown(result)
    assert all((RESULTS / f).is_file() for f in result["figures"])


def test_every_planned_setting_was_measured_and_costed(result):
    from t2i_demo import BUDGETS, STEPS, key, settings
    from elit.model import ModelConfig
    from elit.model.backbones import QwenImageArgs
    from elit.sampling import sampling_gflops
    rows, lam = result["rows"], result["protocol"]["guidance_lambda"]
    assert [key(s) for s in settings(lam)] == list(rows)
    teacher = ModelConfig(backbone=QwenImageArgs(input_size=32, in_channels=1, hidden_size=64, depth=6, num_heads=4,
                                                 out_channels=1, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
                                                 text_tokens=8))
    student = teacher.override(elit=True, head_depth=1, tail_depth=1, window=[4, 4], min_budget=2, latent_pos="tokens")
    cfg_cost = sampling_gflops(teacher, STEPS, guidance="cfg")
    for row in rows.values():
        config = teacher if row["model"] == "teacher" else student
        gflops = sampling_gflops(config, STEPS, budget=row["budget"], guidance=row["guidance"],
                                 weak_budget=row.get("weak_budget"), scale=row["scale"] or 0.0)
        assert row["gflops_per_image"] == pytest.approx(gflops, abs=1e-3)
        assert row["cost_vs_teacher_cfg"] == pytest.approx(gflops / cfg_cost, abs=1e-3)
    ccfg = [rows[f"elit-b{b}-ccfg-weak{BUDGETS[-1]}"]["gflops_per_image"] for b in BUDGETS]
    assert ccfg == sorted(ccfg, reverse=True)          # fewer latents, fewer FLOPs
