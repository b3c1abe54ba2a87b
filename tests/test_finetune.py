"""elit finetune: a pretrained model -> ELIT by distillation, from a diffusers Qwen-Image, SD3, FLUX or
Wan folder and from a converted (epsilon-prediction) DiT checkpoint."""
import json

import pytest
import torch
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, SD3Transformer2DModel, WanTransformer3DModel
from safetensors.torch import load_file

import elit
from backbone_suite import randomize_
from elit.cli import main
from elit.data import write_text_latents
from elit.flow import interpolate
from elit.flow.distill import Teacher
from elit.flow.vp import VPSchedule
from elit.model import TextCondition
from elit.train import distributed as D
from elit.train.finetune import FinetuneTrainer, load_finetune_config, load_teacher, student_model

TEXT = 6
FINETUNE = """
model: {input_size: 16, text_tokens: 6, head_depth: 1, tail_depth: 1, window: [4, 4], min_budget: 2}
data: {name: text-latents, root: DATA}
train: {seed: 0, max_steps: 4, global_batch_size: 8, class_dropout_prob: 0.1, budget_draw: multi,
        time_shift: 2.22, lr: 2.0e-3, warmup_steps: 0, ema_decay: 0.0}
log: {log_every: 2, ckpt_every: 1000, keep_last: 1, sample_per_row: 2, sample_steps: 2, sample_budgets: [2, 16],
      progress: false}
system: {threads: 1}
finetune: {distill_weight: 20.0}
"""


@pytest.fixture(scope="module")
def qwen_teacher(tmp_path_factory):
    """A tiny Qwen-Image "pretrained" transformer saved as a diffusers folder, and captioned latents."""
    root = tmp_path_factory.mktemp("qwen")
    torch.manual_seed(0)
    tr = QwenImageTransformer2DModel(patch_size=2, in_channels=12, out_channels=3, num_layers=4, attention_head_dim=8,
                                     num_attention_heads=4, joint_attention_dim=16, axes_dims_rope=(2, 2, 4))
    randomize_(tr)   # weights of every scale, so the teacher's velocity is far from the head + tail's
    tr.save_pretrained(root / "teacher")
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(4, TEXT, dtype=torch.bool)
    mask[1, 3:] = False
    write_text_latents(root / "data", torch.randn(64, 3, 16, 16, generator=g), torch.arange(64) % 4,
                       torch.randn(4, TEXT, 16, generator=g), mask, ["a", "b", "c", "d"])
    (root / "ft.yaml").write_text(FINETUNE.replace("DATA", str(root / "data")))
    return root


def distance_to_teacher(student, teacher, data, budget=None, n=16):
    """Mean ||v_student - v_teacher||^2 on a fixed batch of noisy data."""
    g = torch.Generator().manual_seed(123)
    items = [data[i] for i in range(n)]
    x0 = torch.stack([x for x, _ in items])
    y = TextCondition(**{k: torch.stack([c[k] for _, c in items]) for k in items[0][1]})
    eps, t = torch.randn(x0.shape, generator=g), torch.linspace(0.05, 0.95, n)
    xt = interpolate(x0, eps, t)
    with torch.no_grad():
        return (student(xt, t, y, budget=budget) - teacher.velocity(xt, t, y)).pow(2).mean().item()


def test_student_is_teacher_plus_interface_and_the_teacher_stays_unchanged(qwen_teacher, tmp_path):
    cfg, ft = load_finetune_config(str(qwen_teacher / "ft.yaml"), teacher=str(qwen_teacher / "teacher"))
    trainer = FinetuneTrainer(cfg, ft, tmp_path / "run", D.DistEnv())
    teacher = trainer.teacher.model
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    names = {n for n, _ in trainer.model.named_parameters()}
    assert {n for n in names if not n.startswith("interface.")} == set(before)      # only interface params added
    assert any(n.startswith("interface.") for n in names)
    shared = {id(p) for p in teacher.parameters()} & {id(p) for p in trainer.model.parameters()}
    assert not shared                                                                 # the student has its own copy
    result = trainer.run()
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())      # frozen through the steps
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert moved                                                                      # while the student learned
    exported = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert set(exported) == set(trainer.model.state_dict())                           # no teacher inside
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["loss_distill"] > 0 and r["loss_flow"] > 0 for r in records)          # both terms logged
    assert records[-1]["loss"] == pytest.approx(records[-1]["loss_flow"] + 20 * records[-1]["loss_distill"], rel=1e-6)
    assert result["step"] == 4 and elit.load_pretrained(tmp_path / "run" / "model").budgets == list(range(2, 17))


def test_distillation_halves_the_full_budget_distance_to_the_teacher(qwen_teacher, tmp_path):
    out = tmp_path / "run"
    assert main(["finetune", "--teacher", str(qwen_teacher / "teacher"), "--config", str(qwen_teacher / "ft.yaml"),
                 "--out", str(out), "--max-steps", "60", "train.class_dropout_prob=0"]) == 0
    cfg, _ = load_finetune_config(str(qwen_teacher / "ft.yaml"), teacher=str(qwen_teacher / "teacher"))
    teacher = Teacher(load_teacher(qwen_teacher / "teacher", cfg.model.override(elit=False)))
    torch.manual_seed(0)    # the trainer's seed: the student it started from
    start = student_model(teacher.model, cfg.model).eval()
    data = elit.data.build_dataset(cfg.data)
    before = distance_to_teacher(start, teacher, data)
    after = distance_to_teacher(elit.load_pretrained(out / "model"), teacher, data)
    assert after < 0.5 * before


class PerfectEpsilonModel(torch.nn.Module):
    """Stands in for a converted DiT that predicts the noise exactly: it checks that its input is the
    VP point sqrt(abar_s) x0 + sqrt(1 - abar_s) eps of the step it is fed, and returns eps."""

    def __init__(self, x0, eps, schedule):
        super().__init__()
        self.x0, self.eps, self.schedule = x0, eps, schedule
        self.config = elit.create_model("DiT-S/2", input_size=8, in_channels=1, num_classes=2).config.override(
            prediction="epsilon", elit=False)

    def forward(self, x_vp, t, y):
        abar = self.schedule.alpha_bar(t.double() * 1000).view(-1, 1, 1, 1)
        expected = abar.sqrt() * self.x0.double() + (1 - abar).sqrt() * self.eps.double()
        torch.testing.assert_close(x_vp.double(), expected, rtol=1e-5, atol=1e-5)
        return self.eps


def test_an_epsilon_teacher_gives_the_rectified_flow_velocity():
    schedule = VPSchedule("linear")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    t = torch.tensor([0.02, 0.2, 0.5, 0.8, 0.98])
    teacher = Teacher(PerfectEpsilonModel(x0, eps, schedule), schedule)
    v = teacher.velocity(interpolate(x0, eps, t), t, None)
    torch.testing.assert_close(v, eps - x0, rtol=1e-4, atol=1e-4)
    step, _ = schedule.rf_to_vp(t)
    abar = schedule.alpha_bar(step)
    torch.testing.assert_close(abar / (1 - abar), ((1 - t.double()) / t.double()) ** 2, rtol=1e-6, atol=0)


@pytest.mark.parametrize("source,fixture", [("dit", "dit-a"), ("uvit", "uvit-a")])
def test_a_converted_epsilon_model_finetunes_into_a_velocity_elit(fixtures_dir, tmp_path, source, fixture):
    """facebookresearch DiT (linear betas) and baofff U-ViT (scaled-linear betas) checkpoints."""
    fx = fixtures_dir / fixture
    assert main(["convert", "--from", source, "--weights", str(fx / "weights.safetensors"), "--config",
                 str(fx / "config.json"), "--out", str(tmp_path / "dit")]) == 0
    (tmp_path / "ft.yaml").write_text("""
model: {head_depth: 1, tail_depth: 1, window: [4, 4]}
data: {name: synthetic, shape: [4, 16, 16], num_classes: 10, size: 64}
train: {max_steps: 3, global_batch_size: 4, lr: 1.0e-4, ema_decay: 0.0}
log: {log_every: 1, sample_per_row: 2, sample_steps: 2, sample_budgets: [1, 16], progress: false}
system: {threads: 1}
""")
    out = tmp_path / "run"
    assert main(["finetune", "--teacher", str(tmp_path / "dit"), "--config", str(tmp_path / "ft.yaml"),
                 "--out", str(out)]) == 0
    student = elit.load_pretrained(out / "model")
    assert student.config.backbone.prediction == "velocity" and student.budgets == list(range(1, 17))
    assert student.config.interface.latent_pos == "learned"     # the converted DiT has no RoPE
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["loss_distill"] > 0 for r in records)
    # the student samples with the rectified-flow solvers; the teacher with DDIM, from the same seeds
    assert elit.sample(student, [0, 1], steps=2, budget=4).shape == elit.sample(
        elit.load_pretrained(tmp_path / "dit"), [0, 1], steps=2, sampler="ddim").shape == (2, 4, 16, 16)


def test_finetune_refuses_what_it_cannot_use(qwen_teacher, tmp_path):
    with pytest.raises(ValueError, match="no teacher"):
        load_finetune_config(str(qwen_teacher / "ft.yaml"))
    with pytest.raises(ValueError, match="not a model folder"):
        load_finetune_config(str(qwen_teacher / "ft.yaml"), teacher=str(tmp_path))
    cfg, ft = load_finetune_config(str(qwen_teacher / "ft.yaml"), ["finetune.distill_weight=5"],
                                   teacher=str(qwen_teacher / "teacher"))
    assert ft.distill_weight == 5.0 and cfg.model.interface.latent_pos == "tokens"
    with pytest.raises(ValueError, match="finetune.lambda"):
        load_finetune_config(str(qwen_teacher / "ft.yaml"), ["finetune.lambda=5"], teacher=str(qwen_teacher / "teacher"))


def test_a_training_preset_configures_a_student_of_a_matching_teacher(tmp_path, capsys):
    """Issue 30: `elit finetune --help` points to the training presets; their model section carries the
    backbone too, which must agree with the teacher (it fixes the backbone) and is then dropped."""
    import elit
    from elit.cli import main
    from elit.train.config import load_config
    preset = load_config("fmnist-elit-dit").model
    teacher = tmp_path / "dit"
    elit.save_pretrained(elit.ELITModel(preset.override(elit=False)), teacher)
    cfg, _ = load_finetune_config("fmnist-elit-dit", teacher=str(teacher))
    assert (cfg.model.backbone, cfg.model.split, cfg.model.window) == (preset.backbone, preset.split, preset.window)
    assert cfg.model.budget_space.budgets == preset.budget_space.budgets and cfg.train.max_steps == 1500
    small = tmp_path / "small"
    elit.save_pretrained(elit.ELITModel(preset.override(elit=False, hidden_size=32, num_heads=2)), small)
    assert main(["finetune", "--teacher", str(small), "--config", "fmnist-elit-dit", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sets model.backbone.hidden_size=64 but the teacher has 32" in err and "(and 1 more: num_heads)" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="--teacher .* and finetune.teacher"):
        from elit.train.config import check_flags
        check_flags(["finetune.teacher=a"], {"--teacher": ("finetune.teacher", "b")})


def test_finetune_resumes_exactly(qwen_teacher, tmp_path):
    """Stopped after 2 steps and rerun to 4, a fine-tune ends where an uninterrupted one does."""
    def run(out, steps):
        assert main(["finetune", "--teacher", str(qwen_teacher / "teacher"), "--config", str(qwen_teacher / "ft.yaml"),
                     "--out", str(out), "--max-steps", str(steps), "log.ckpt_every=2"]) == 0
    run(tmp_path / "once", 4)
    run(tmp_path / "twice", 2)
    run(tmp_path / "twice", 4)
    a = load_file(str(tmp_path / "once" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "twice" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "twice" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]


def test_finetune_under_fsdp2_with_two_processes(qwen_teacher, tmp_path):
    """torchrun, two gloo ranks, FSDP2 on the student and the teacher: trains and exports."""
    import os
    import subprocess
    import sys
    out = tmp_path / "fsdp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "elit",
           "finetune", "--teacher", str(qwen_teacher / "teacher"), "--config", str(qwen_teacher / "ft.yaml"),
           "--out", str(out), "--max-steps", "2", "system.parallel=fsdp"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and records[-1]["loss_distill"] > 0
    assert elit.load_pretrained(out / "model").budgets == list(range(2, 17))


def test_a_run_folder_keeps_its_teacher(qwen_teacher, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "finetune.json").write_text(json.dumps({"teacher": "/elsewhere/teacher"}))
    assert main(["finetune", "--teacher", str(qwen_teacher / "teacher"), "--config", str(qwen_teacher / "ft.yaml"),
                 "--out", str(out)]) == 2
    assert "fine-tunes teacher /elsewhere/teacher" in capsys.readouterr().err


POOLED_TEACHERS = {   # teachers that take a pooled text vector and no text mask; tiny, 3 latent channels
    "sd3": lambda: SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=3, num_layers=4, attention_head_dim=8,
                                         num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=16,
                                         pooled_projection_dim=24, out_channels=3, pos_embed_max_size=16),
    "flux": lambda: FluxTransformer2DModel(patch_size=1, in_channels=12, out_channels=12, num_layers=2,
                                           num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                           joint_attention_dim=16, pooled_projection_dim=24, guidance_embeds=True,
                                           axes_dims_rope=(4, 6, 6)),
}


@pytest.mark.parametrize("kind", sorted(POOLED_TEACHERS))
def test_sd3_and_flux_teachers_finetune_into_elastic_models(kind, tmp_path):
    """`elit finetune --teacher` a diffusers SD3 / FLUX folder: the student learns at every budget it
    draws, the export loads, and make_elastic wraps it for the model's own pipeline."""
    torch.manual_seed(0)
    randomize_(POOLED_TEACHERS[kind]()).save_pretrained(tmp_path / "teacher")
    g = torch.Generator().manual_seed(0)
    write_text_latents(tmp_path / "data", torch.randn(32, 3, 16, 16, generator=g), torch.arange(32) % 4,
                       torch.randn(4, TEXT, 16, generator=g), torch.ones(4, TEXT, dtype=torch.bool), list("abcd"),
                       pooled=torch.randn(4, 24, generator=g))
    (tmp_path / "ft.yaml").write_text(FINETUNE.replace("DATA", str(tmp_path / "data")))
    out = tmp_path / "run"
    assert main(["finetune", "--teacher", str(tmp_path / "teacher"), "--config", str(tmp_path / "ft.yaml"),
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4 and all(r["loss_distill"] > 0 for r in records)
    student = elit.load_pretrained(out / "model")
    assert type(student.config.backbone).name == kind and student.budgets == list(range(2, 17))
    assert student.config.interface.latent_pos == "tokens"          # the pretrained default
    elastic = elit.make_elastic(student)
    assert elastic.transformer.__class__.__name__ == POOLED_TEACHERS[kind]().__class__.__name__


def test_a_wan_teacher_finetunes_into_an_elastic_video_model(tmp_path):
    """`elit finetune --teacher` a diffusers Wan folder on captioned latent clips (2 frames of 8x16,
    3-D windows of 2x2x4 tokens): the student learns at every budget it draws, the export loads as
    a Wan ELIT, and make_elastic wraps it for WanPipeline."""
    pytest.importorskip("accelerate")   # diffusers loads a Wan folder only through it (elit-diffusion[diffusers])
    torch.manual_seed(0)
    randomize_(WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=3,
                                     out_channels=3, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=4,
                                     rope_max_seq_len=32)).save_pretrained(tmp_path / "teacher")
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(4, TEXT, dtype=torch.bool)
    mask[2, 4:] = False
    write_text_latents(tmp_path / "data", torch.randn(32, 3, 2, 8, 16, generator=g), torch.arange(32) % 4,
                       torch.randn(4, TEXT, 16, generator=g), mask, list("abcd"))
    config = FINETUNE.replace("DATA", str(tmp_path / "data")).replace(
        "model: {input_size: 16, text_tokens: 6, head_depth: 1, tail_depth: 1, window: [4, 4], min_budget: 2}",
        "model: {input_size: 8, width: 16, frames: 2, text_tokens: 6, head_depth: 1, tail_depth: 1, window: [2, 2, 4],\n"
        "        min_budget: 2}")
    (tmp_path / "ft.yaml").write_text(config)
    out = tmp_path / "run"
    assert main(["finetune", "--teacher", str(tmp_path / "teacher"), "--config", str(tmp_path / "ft.yaml"),
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4 and all(r["loss_distill"] > 0 for r in records)
    student = elit.load_pretrained(out / "model")
    assert type(student.config.backbone).name == "wan" and student.budgets == list(range(2, 17))
    assert student.config.window == (2, 2, 4) and student.sample_shape() == (3, 2, 8, 16)
    assert elit.make_elastic(student).transformer.__class__.__name__ == "WanTransformer3DModel"
