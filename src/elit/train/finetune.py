"""`elit finetune`: a pretrained model -> ELIT, by distillation from itself (ELIT-SPEC 2.6).

The student is the teacher's weights plus a fresh latent interface; the teacher stays frozen, in
eval mode, outside the student (never saved with it). Each step draws a budget as `elit train`
does (multi-budget by default), t from a logit-normal with a time shift (paper: 2.22), and
minimises flow + lambda * distill (flow/distill.py; paper: lambda = 20), logging both terms.
Everything else (resume, DDP / FSDP2, EMA, checkpoints, export) is `elit train`'s loop.

Teachers (`--teacher PATH`):
- a local diffusers folder of a QwenImageTransformer2DModel, SD3Transformer2DModel,
  FluxTransformer2DModel or WanTransformer3DModel (the `transformer/` folder of a pipeline), loaded
  with `from_pretrained(PATH)`: the text-to-image (Wan: text-to-video) path; data: captioned latents
  (`data: {name: text-latents}`; Wan: latent clips (C, T, H, W));
- an elit model folder of a plain model: trained with `elit train`, or converted with `elit
  convert` (DiT, U-ViT: epsilon prediction; the student predicts velocity, see flow/distill.py).

The config is a training YAML whose `model:` section holds only the ELIT settings (head_depth,
tail_depth, window, min_budget, latent_pos, ...; for an MM-DiT also input_size, the latent size,
and text_tokens; for Wan also frames and width), plus a `finetune:` section (FinetuneSettings).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from dataclasses import dataclass
from importlib import resources

import torch

from elit._io import read_json, write_json
from elit._precision import resolve_precision
from elit.errors import MissingInputError, UserError
from elit.flow.distill import Teacher, distill_loss
from elit.flow.vp import VPSchedule
from elit.model import ELITModel, ModelConfig
from elit.model.config import LEGACY_TRAINING_FIELDS, build_dataclass, section_parts
from elit.train import distributed as D
from elit.train.config import (SECTIONS, RunConfig, apply_overrides, check_settings, list_presets, read_yaml,
                               train_section)
from elit.train.trainer import Trainer

# Apart from the training presets (elit/configs/*.yaml): a fine-tuning config has other sections.
_FINETUNE_PRESETS = resources.files("elit") / "configs" / "finetune"


def list_finetune_presets() -> list[str]:
    return sorted(p.name[:-5] for p in _FINETUNE_PRESETS.iterdir() if p.name.endswith(".yaml"))


@dataclass
class FinetuneSettings:
    teacher: str | None = None          # a diffusers transformer folder or an elit model folder
    distill_weight: float = 20.0        # lambda (paper: 20, so that both terms are of similar size)
    noise_schedule: str | None = None   # epsilon teachers: "linear" / "scaled-linear" (default by backbone)


# ----------------------------------------------------------------------------- the teacher
def teacher_kind(path) -> str:
    """"diffusers" or "elit", from the folder's config.json."""
    path = pathlib.Path(path)
    meta = read_json(path / "config.json", "teacher config") if (path / "config.json").is_file() else None
    if meta is None:
        raise MissingInputError(f"teacher {path} is not a model folder (no config.json): give a local diffusers "
                                f"transformer folder or an elit model folder")
    if isinstance(meta, dict) and meta.get("_class_name") in diffusers_classes():
        return "diffusers"
    if isinstance(meta, dict) and str(meta.get("format", "")).startswith("elit-model/"):
        return "elit"
    name = meta.get("_class_name") if isinstance(meta, dict) else None
    raise UserError(f"teacher {path}: {'a diffusers ' + name if name else 'an unknown model'}; supported: "
                    f"diffusers {', '.join(diffusers_classes())} folders and elit model folders")


def diffusers_classes() -> list[str]:
    """The diffusers transformers an adapter wraps (the backbone registry says which)."""
    from elit.model.backbones import BACKBONES
    return sorted(a.diffusers_class for a in BACKBONES.values() if getattr(a, "diffusers_class", ""))


def teacher_config(path, input_size: int | None = None, text_tokens: int | None = None, **geometry) -> ModelConfig:
    """The teacher's plain ModelConfig, read without loading its weights. A diffusers teacher is built
    at `input_size` / `text_tokens` (and a video one's `geometry`: frames, width); an elit folder
    brings its own."""
    if teacher_kind(path) == "elit":
        from elit.hub import read_config
        config, _ = read_config(path)
        if config.elastic:
            raise UserError(f"teacher {path} is already an ELIT model; fine-tune from the plain model")
        return config
    from elit.interop.diffusers import elastic_config
    meta = read_json(pathlib.Path(path) / "config.json", "teacher config")
    stand_in = type(meta["_class_name"], (), {"config": meta})()   # from_transformer reads .config only
    try:
        return elastic_config(stand_in, elit=False, input_size=input_size, text_tokens=text_tokens, **geometry)
    except (KeyError, TypeError) as e:   # a hand-made or truncated config.json, not a bug of ours
        what = f"lacks {e}" if isinstance(e, KeyError) else f"has a value of the wrong type ({e})"
        raise UserError(f"teacher {path}/config.json {what}: it is not a complete diffusers {meta['_class_name']} "
                        f"config; point --teacher at the transformer folder diffusers saved") from None


def load_teacher(path, config: ModelConfig, dtype: torch.dtype = torch.float32) -> ELITModel:
    """The teacher as a plain ELITModel (eval, frozen), on the CPU in `dtype`. `config` describes a
    diffusers teacher (its plain config); an elit model folder brings its own."""
    if teacher_kind(path) == "elit":
        from elit.hub import load_pretrained
        return load_pretrained(path, dtype=dtype).requires_grad_(False)
    import importlib.util

    from elit.model.backbones.mmdit import import_diffusers
    cls = getattr(import_diffusers(), json.loads((pathlib.Path(path) / "config.json").read_text())["_class_name"])
    if getattr(cls, "_keep_in_fp32_modules", None) and importlib.util.find_spec("accelerate") is None:
        # diffusers loads a model that keeps modules in float32 (Wan) only through accelerate
        raise UserError(f"loading a {cls.__name__} folder needs accelerate: pip install accelerate "
                        f"(or 'elit-diffusion[diffusers]')")
    transformer = cls.from_pretrained(str(path), torch_dtype=dtype)
    backbone = config.adapter(config.backbone, transformer)
    return ELITModel(config, backbone=backbone).eval().requires_grad_(False)


def student_model(teacher: ELITModel, config: ModelConfig) -> ELITModel:
    """Teacher weights (copied: the teacher stays as it is; float32, the trainer's master weights)
    plus a fresh interface."""
    if teacher.backbone.wraps_pretrained:
        backbone = config.adapter(config.backbone, copy.deepcopy(teacher.backbone.transformer).float())
        student = ELITModel(config, backbone=backbone)
    else:
        student = ELITModel(config)
        missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
        if unexpected or any(not k.startswith("interface.") for k in missing):
            raise UserError(f"the teacher's weights do not fit the student: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
    return student.requires_grad_(True).train()


# ----------------------------------------------------------------------------- the config
def elit_settings(plain: ModelConfig, parts: dict, config_name: str) -> dict:
    """The student's model settings from a fine-tuning config's model section (`section_parts`), as
    {"interface": ..., "split": ..., "backbone": ...}. The teacher fixes the backbone, so a backbone
    field (a training preset has them all) must agree with the teacher's and is then dropped; elit and
    prediction are the student's by definition (true, velocity)."""
    backbone, interface, split = dict(parts["backbone"]), dict(parts["interface"]), dict(parts["split"])
    if parts["preset"] is not None:
        from elit.model import preset_config
        preset = preset_config(parts["preset"]).to_dict()
        backbone = {**preset["backbone"], **backbone}
        interface, split = {**(preset["interface"] or {}), **interface}, {**(preset["split"] or {}), **split}
    if parts["elit"] is False:
        raise UserError(f"config {config_name!r} sets model.elit to false, but fine-tuning makes an ELIT model; "
                        f"drop model.elit")
    prediction = backbone.pop("prediction", "velocity")
    if prediction != "velocity":
        raise UserError(f"config {config_name!r} sets model.prediction={prediction!r}; the student predicts "
                        f"velocity (an epsilon teacher is distilled into one): drop model.prediction")
    teacher = plain.to_dict()["backbone"]
    clash = [k for k in backbone if k in teacher and backbone[k] != teacher[k]]
    if clash:
        k = clash[0]
        raise UserError(f"config {config_name!r} sets model.backbone.{k}={backbone[k]!r} but the teacher has "
                        f"{teacher[k]!r}: the teacher fixes the backbone, and a fine-tuning config's model section "
                        f"holds only the ELIT settings (interface, split); drop model.backbone.{k}"
                        + (f" (and {len(clash) - 1} more: {', '.join(clash[1:4])})" if len(clash) > 1 else ""))
    return {"interface": interface, "split": split, "backbone": {k: v for k, v in backbone.items() if k not in teacher}}


def load_finetune_config(name_or_file: str, overrides: list[str] = (),
                         teacher: str | None = None) -> tuple[RunConfig, FinetuneSettings]:
    """A fine-tuning YAML (+ `section.key=value` overrides, `finetune.*` included) -> configs."""
    if not pathlib.Path(name_or_file).is_file():
        if name_or_file in list_finetune_presets():
            name_or_file = str(_FINETUNE_PRESETS / f"{name_or_file}.yaml")
        elif name_or_file not in list_presets():   # a training preset also works as a starting point
            raise MissingInputError(f"config {name_or_file!r} is neither a file nor a built-in preset; fine-tuning "
                                    f"presets: {', '.join(list_finetune_presets())} (training presets work too: "
                                    f"elit train --help)")
    raw = read_yaml(name_or_file)
    ft_raw = dict(raw.pop("finetune", None) or {})
    rest = []
    for item in overrides:
        if item.startswith("finetune."):
            ft_raw.update(apply_overrides({}, ["train." + item[len("finetune."):]])["train"])
        else:
            rest.append(item)
    raw = apply_overrides(raw, rest)
    ft = build_dataclass(FinetuneSettings, ft_raw, "finetune")
    if teacher is not None:
        ft = dataclasses.replace(ft, teacher=str(teacher))
    if not ft.teacher:
        raise UserError("no teacher: pass --teacher PATH (a diffusers transformer folder or an elit model folder)")
    if ft.noise_schedule is not None:
        VPSchedule(ft.noise_schedule)   # validates the name
    unknown = sorted(set(raw) - {"model", "data", *SECTIONS})
    if unknown:
        raise UserError(f"unknown config section {unknown[0]!r}; valid: model, data, train, log, system, finetune")
    model_raw = dict(raw.get("model") or {})
    for name in LEGACY_TRAINING_FIELDS:   # a training config may keep the class dropout under model:
        if name in model_raw:
            raw["train"] = {**(raw.get("train") or {})}
            raw["train"].setdefault(name, model_raw.pop(name))
    parts = section_parts(model_raw)
    size = parts["backbone"].pop("input_size", None)
    # a diffusers video teacher (Wan) is built at these too; an elit teacher's are compared below
    video = {k: parts["backbone"].pop(k) for k in ("frames", "width")
             if k in parts["backbone"] and teacher_kind(ft.teacher) == "diffusers"}
    plain = teacher_config(ft.teacher, size, parts["backbone"].pop("text_tokens", None), **video)
    if size is not None:   # a diffusers teacher was built at it; an elit teacher has its own: compared below
        parts["backbone"]["input_size"] = size
    student = elit_settings(plain, parts, name_or_file)
    from elit.model.positions import resolve_latent_pos     # the pretrained default where none is given
    student["interface"]["latent_pos"] = resolve_latent_pos(
        student["interface"].get("latent_pos"), uses_rope=plain.backbone.uses_rope, pretrained=True,
        token_positions=plain.adapter.token_positions(plain.backbone))
    model = plain.override(elit=True, prediction="velocity", **student)
    data = dict(raw.get("data") or {})
    if "name" not in data:
        raise UserError("config section 'data' needs a 'name' (text-latents for a text-to-image teacher)")
    sections = {s: build_dataclass(cls, train_section(raw.get(s)) if s == "train" else dict(raw.get(s) or {}), s)
                for s, cls in SECTIONS.items()}
    cfg = RunConfig(model=model, data=data, **sections)
    check_settings(cfg)
    return cfg, ft


# ----------------------------------------------------------------------------- the loop
class FinetuneTrainer(Trainer):
    """elit train's loop with a student built from the teacher and the distillation loss."""

    def __init__(self, cfg: RunConfig, ft: FinetuneSettings, out, env: D.DistEnv):
        self.ft = ft
        # an elit teacher brings its own config; a diffusers one is the student's backbone, plain.
        # It only runs forward passes: under bf16 autocast it is held in bf16 (half the memory).
        sy = cfg.system
        bf16 = resolve_precision(sy.precision, env.device, what="system.precision") == "bf16"   # told by Trainer
        teacher_model = load_teacher(ft.teacher, dataclasses.replace(cfg.model, interface=None, split=None),
                                     torch.bfloat16 if bf16 else torch.float32)
        self._teacher_model = teacher_model
        super().__init__(cfg, out, env)
        teacher_model.to(env.device)
        if env.distributed and cfg.system.parallel == "fsdp":   # a big teacher is sharded like the student
            D.wrap_model(teacher_model, "fsdp", env)
        schedule = VPSchedule(ft.noise_schedule) if ft.noise_schedule else None
        self.teacher = Teacher(teacher_model, schedule)
        self._terms = torch.zeros(3, dtype=torch.float64, device=env.device)   # flow sum, distill sum, count

    def build_model(self) -> ELITModel:
        return student_model(self._teacher_model, self.cfg.model)

    def loss(self, x, y, t, eps, budget):
        total, flow, distill = distill_loss(self.wrapped, self.teacher, x, y, t, eps, budget, self.ft.distill_weight)
        self._terms += torch.stack([flow.detach().sum(), distill.detach().sum(),
                                    torch.tensor(float(len(flow)), device=flow.device)]).double()
        return total

    def log_terms(self) -> dict:
        flow, distill, n = D.all_reduce_sum(self._terms.clone()).tolist()   # a collective: every rank calls it
        self._terms.zero_()
        return {"loss_flow": flow / max(n, 1), "loss_distill": distill / max(n, 1)}

    def run(self) -> dict:
        self._check_teacher_record()
        return super().run()

    def _check_teacher_record(self) -> None:
        """DIR/finetune.json names the teacher; a resume with another teacher is refused."""
        record = {**dataclasses.asdict(self.ft), "teacher": str(pathlib.Path(self.ft.teacher).resolve())}
        path = self.out / "finetune.json"
        if path.is_file():
            old = read_json(path, "fine-tuning record")
            if old.get("teacher") != record["teacher"]:
                raise UserError(f"{self.out} fine-tunes teacher {old.get('teacher')}, not {record['teacher']}; "
                                f"use a new --out for another teacher")
        if self.env.is_main:
            write_json(path, record)


def finetune(cfg: RunConfig, ft: FinetuneSettings, out) -> dict:
    """Fine-tune (or resume) the run in folder `out`; returns what `elit.train.train` returns."""
    import contextlib
    import gc

    from elit._lock import exclusive_output
    from elit.train.run_folder import check_run_folder
    env = D.init_distributed(cfg.system.device)
    try:
        with contextlib.ExitStack() as stack:
            if env.is_main:   # as elit train: one process per run folder, someone else's folder refused
                stack.enter_context(exclusive_output(out, "elit finetune"))
                check_run_folder(out, cfg.to_dict())
            trainer = FinetuneTrainer(cfg, ft, out, env)
            result = trainer.run()
    except BaseException:
        D.abort()
        raise
    del trainer
    gc.collect()
    D.shutdown()
    return result
