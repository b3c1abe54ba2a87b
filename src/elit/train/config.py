"""Training configs: YAML files with five sections, dotted command-line overrides, strict keys.

    model:  the model config by part (backbone, interface, split; optionally `preset: ELIT-DiT-B/2`
            under them); keyword names (`hidden_size: 64`) are its shorthand (elit.model.config)
    data:   a dataset spec for `elit.data.build_dataset` ({name: fmnist | folder | latents, ...})
    train:  objective, budgets, optimiser, EMA (TrainSettings)
    log:    logging, checkpoints, sample grids (LogSettings)
    system: device, precision, compile, distributed (SystemSettings)

A built-in preset is named by its file stem in elit/configs (`fmnist-elit-dit`); anything else is a
path. Overrides `train.lr=2e-4 model.backbone.hidden_size=256` (or the shorthand model.hidden_size=256)
beat the file. A typo must not be silently ignored, so every unknown key is a ValueError that lists
the valid ones.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from dataclasses import dataclass, field
from importlib import resources

import yaml

from elit.errors import MissingInputError, UserError
from elit.model import ModelConfig
from elit.model.config import (LEGACY_TRAINING_FIELDS, PARTS, build_config, build_dataclass, nested_section,
                               section_parts)


@dataclass
class TrainSettings:
    seed: int = 0
    max_steps: int = 1000
    global_batch_size: int = 256        # over all ranks; each rank takes global / world_size
    class_dropout_prob: float = 0.1     # labels -> the null class, so the model learns CFG's unconditional pass
    # ---- objective (elit.flow)
    time_distribution: str = "logit_normal"   # or "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0
    time_shift: float = 1.0             # t' = s t / (1 + (s-1) t); 1 = off
    # ---- which budgets training draws (a budget itself is one number: model(..., budget=4)):
    # "multi" draws J~ ~ Uniform{budget_min..budget_max} per step (the same on every rank); an int
    # trains one fixed budget; "full" trains at J (and is the only choice for plain DiT).
    budget_draw: str | int = "multi"
    budget_min: int | None = None       # None: the model's smallest budget
    budget_max: int | None = None       # None: J; lower it to cap training cost (paper Table 5)
    # ---- optimiser (paper: Adam, lr 1e-4, 10k warm-up, clip 1.0, EMA 0.9999)
    lr: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"       # "constant" after warm-up, or "cosine" decay to 0 at max_steps
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0              # 0 = off
    ema_decay: float = 0.9999
    # ---- divergence: a step whose loss or gradient norm is NaN/Inf is skipped (no update); after
    # this many such steps in a row, training stops with an error (the last checkpoint is kept).
    max_nonfinite_steps: int = 10


@dataclass
class LogSettings:
    log_every: int = 50                 # steps between JSONL records (and TensorBoard scalars)
    t_bins: int = 5                     # loss logged per equal-width bin of t in [0, 1]
    ckpt_every: int = 1000
    keep_last: int = 3                  # checkpoints kept; older ones are deleted
    sample_every: int = 0               # steps between sample grids; 0 = only at the end
    sample_budgets: list | None = None  # rows of the grid; None: powers of two up to J, and J
    sample_steps: int = 40              # Euler steps (paper: 40)
    sample_per_row: int = 10            # seeds 0..n-1, labels seed % num_classes
    progress: bool = True               # tqdm bar on rank 0
    tensorboard: bool = False           # DIR/tensorboard, only if tensorboard is installed


@dataclass
class SystemSettings:
    device: str = "auto"                # auto: CUDA when present, else CPU
    precision: str = "auto"             # auto: bf16 autocast on CUDA, fp32 on CPU; or "bf16" / "fp32"
    tf32: bool = True                   # TF32 matmuls on CUDA
    compile: bool = False               # elit.compile_blocks: the repeated blocks, in place (names unchanged)
    grad_checkpointing: bool = False
    parallel: str = "ddp"               # "ddp" or "fsdp" (FSDP2: fully_shard per block, then the root)
    num_workers: int = 0                # DataLoader workers per rank
    threads: int = 0                    # torch.set_num_threads; 0 = auto (the cores other work leaves free)


# Shipped as package data (pyproject: elit = ["configs/*.yaml"]); not a Python package itself.
_PRESET_DIR = resources.files("elit") / "configs"
SECTIONS = {"train": TrainSettings, "log": LogSettings, "system": SystemSettings}
TOP_LEVEL = ("model", "data", "train", "log", "system")


@dataclass
class RunConfig:
    model: ModelConfig
    data: dict
    train: TrainSettings
    log: LogSettings
    system: SystemSettings

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": dict(self.data), "train": dataclasses.asdict(self.train),
                "log": dataclasses.asdict(self.log), "system": dataclasses.asdict(self.system)}


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in _PRESET_DIR.iterdir() if p.name.endswith(".yaml"))


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that sets one key twice (the message names it and both lines)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a mapping that repeats a key is an error: YAML keeps the last one
    silently, so `lr` written twice would train with whichever came second."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue   # `<<: *base` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(None, None, f"key {key!r} is set twice in one mapping (lines {seen[key]} "
                                                    f"and {line}); keep one", key_node.start_mark)
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(name_or_file: str) -> dict:
    path = pathlib.Path(name_or_file)
    if path.is_file():
        text = path.read_text()
    elif name_or_file in list_presets():
        text = _PRESET_DIR.joinpath(f"{name_or_file}.yaml").read_text()
    else:
        raise MissingInputError(f"config {name_or_file!r} is neither a file nor a built-in preset; "
                                f"presets: {', '.join(list_presets())}")
    try:
        raw = _load_yaml(text) or {}
    except DuplicateKeyError as e:
        raise UserError(f"config {name_or_file!r}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise UserError(f"config {name_or_file!r} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {name_or_file!r} must be a mapping with sections {TOP_LEVEL}")
    return raw


def _parse_value(text: str):
    try:
        value = _load_yaml(text) if text != "" else None
    except DuplicateKeyError as e:
        raise UserError(f"its value: {e.problem}") from None
    except yaml.YAMLError as e:
        raise UserError(f"its value is not valid YAML: {' '.join(str(e).split())}") from None
    if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string; numbers should be numbers
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`section.key=value` pairs (value parsed as YAML) set into a copy of `raw`."""
    raw = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in raw.items()}
    seen: dict[str, object] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.split(".")
        nested = len(parts) == 3 and parts[0] == "model" and parts[1] in PARTS   # model.interface.window=[2,2]
        if not sep or not (len(parts) == 2 or nested) or not all(parts):
            raise UserError(f"override {item!r} must look like section.key=value (e.g. train.lr=2e-4, "
                             f"model.interface.window=[2,2]); sections: {', '.join(TOP_LEVEL)}")
        section, name = parts[0], parts[-1]
        if section not in TOP_LEVEL:
            raise UserError(f"unknown config section {section!r} in override {item!r}; valid: {', '.join(TOP_LEVEL)}")
        try:
            value = _parse_value(text)
        except UserError as e:
            raise UserError(f"override {item!r}: {e}") from None
        if key in seen:   # the later one wins (a script's base settings, then the user's); the earlier
            _check_alone(section, name, seen[key])   # one is still checked, never silently dropped
        seen[key] = value
        if section == "model":
            _set_model_field(raw, parts[1] if nested else None, name, value)
        else:
            raw.setdefault(section, {})[name] = value
    return raw


def _set_model_field(raw: dict, part: str | None, name: str, value) -> None:
    """One override into the model section, which is first rewritten in the nested spelling, so the
    value replaces what the file set for that field (whether the file named it by part or by keyword)."""
    section = nested_section(raw.get("model") or {})
    placed = section_parts({part: {name: value}} if part else {name: value})
    for key in ("preset", "elit"):
        if placed[key] is not None:
            section[key] = placed[key]
    if placed["elit"] is False:
        section["interface"] = section["split"] = None
    for p in PARTS:
        if placed[p]:
            section[p] = {**(section.get(p) or {}), **placed[p]}
    _store(raw, section)


def _store(raw: dict, section: dict) -> None:
    raw["model"] = section


def _check_alone(section: str, name: str, value) -> None:
    """The type checks of one train/log/system value on its own (for a value a later override replaces)."""
    if section in SECTIONS:
        _check_types(build_dataclass(SECTIONS[section], {name: value}, section), section)


def check_flags(overrides: list[str], flags: dict[str, tuple[str, object]], announce=None) -> None:
    """How flags and overrides merge. A flag is a shorthand for a key ({"--max-steps": ("train.max_steps",
    5)}, value None = not given); since flags and overrides may come in any order, a flag and an
    override of the same key are refused (which one wins would be a guess). Two overrides of one key
    apply left to right, the later winning, and `announce(text)` is told."""
    seen: dict[str, str] = {}
    for item in overrides:
        key = item.partition("=")[0]
        if key in seen and announce is not None and seen[key] != item:
            announce(f"{item} replaces {seen[key]} given before it (the last override of a key wins)")
        seen[key] = item
    for flag, (key, value) in flags.items():
        if value is not None and key in seen:
            raise UserError(f"{key} is set twice ({flag} {value} and {seen[key]}); give it once")


def flag_overrides(overrides: list[str], flags: dict[str, tuple[str, object]], announce=None) -> list[str]:
    """The overrides plus the given flags as overrides, after `check_flags`."""
    check_flags(overrides, flags, announce)
    return list(overrides) + [f"{key}={value}" for key, value in flags.values() if value is not None]


def resolve_config(raw: dict) -> RunConfig:
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise UserError(f"unknown config section {unknown[0]!r}; valid sections: {', '.join(TOP_LEVEL)}")
    for section in TOP_LEVEL:
        if not isinstance(raw.get(section) or {}, dict):
            raise UserError(f"config section {section!r} must be a mapping, got {raw[section]!r}")
    model_raw = dict(raw.get("model") or {})
    train_raw = train_section(raw.get("train"))
    for name in LEGACY_TRAINING_FIELDS:   # older configs kept the class dropout under model:
        if name in model_raw:
            train_raw.setdefault(name, model_raw.pop(name))
    model = model_config(model_raw)
    data = dict(raw.get("data") or {})
    if "name" not in data:
        raise UserError("config section 'data' needs a 'name' (fmnist, folder or latents)")
    sections = {"train": train_raw, "log": dict(raw.get("log") or {}), "system": dict(raw.get("system") or {})}
    cfg = RunConfig(model=model, data=data, **{s: build_dataclass(cls, sections[s], s) for s, cls in SECTIONS.items()})
    check_settings(cfg)
    return cfg


def train_section(section) -> dict:
    """The `train:` section, with the key files written before 0.3 called `budget` read as
    `budget_draw` (the name a budget itself has is the per-call number, model(..., budget=4))."""
    section = dict(section or {})
    if "budget" in section:
        if "budget_draw" in section:
            raise UserError("train.budget (the name before 0.3) and train.budget_draw are both set; keep budget_draw")
        section["budget_draw"] = section.pop("budget")
    return section


def model_config(section: dict) -> ModelConfig:
    """A YAML `model:` section (with its overrides) -> ModelConfig: by part, keyword names on top; a
    flat section of a file written before 0.3 (no part, no preset) is read as it was then."""
    parts = section_parts(section)
    if not parts["nested"] and parts["preset"] is None:
        return ModelConfig.from_flat(section)
    base = None
    if parts["preset"] is not None:
        from elit.model import MODEL_PRESETS, preset_config
        if parts["preset"] not in MODEL_PRESETS:
            raise UserError(f"unknown model preset model.preset={parts['preset']!r}; available: {', '.join(MODEL_PRESETS)}")
        base, parts["preset"] = preset_config(parts["preset"]), None
    return build_config(parts, base)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key.path: old -> new' for every value that differs between two config dicts, nested parts
    compared field by field."""
    def dotted(d, at):
        out = {}
        for k, v in (d or {}).items():
            out.update(dotted(v, f"{at}{k}.") if isinstance(v, dict) else {f"{at}{k}": v})
        return out
    a, b = dotted(old, prefix), dotted(new, prefix)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _check_types(settings, where: str) -> None:
    """Each value has its field's type (by the default's type): YAML gives strings for typos."""
    for f in dataclasses.fields(settings):
        value, default = getattr(settings, f.name), f.default
        if f.default is dataclasses.MISSING or default is None or isinstance(default, (list, str)):
            continue   # lists, optional and mixed-type fields are checked one by one below
        key = f"{where}.{f.name}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{key} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if not isinstance(value, float) or not math.isfinite(value):
                raise UserError(f"{key} must be a finite number, got {value!r}")


def _at_least(value, low, key: str, meaning: str = "") -> None:
    if value < low:
        raise UserError(f"{key} must be >= {low}{meaning}, got {value}")


def _optional_int(value, key: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"{key} must be an integer (latents per group) or null, got {value!r}")


def check_settings(cfg: RunConfig) -> None:
    t, lg, sy = cfg.train, cfg.log, cfg.system
    for settings, where in ((t, "train"), (lg, "log"), (sy, "system")):
        _check_types(settings, where)
    if isinstance(t.budget_draw, bool) or not isinstance(t.budget_draw, (int, str)) or (
            isinstance(t.budget_draw, str) and t.budget_draw not in ("multi", "full")):
        raise UserError(f"train.budget_draw must be 'multi', 'full' or an int (latents per group), "
                        f"got {t.budget_draw!r}")
    _optional_int(t.budget_min, "train.budget_min")
    _optional_int(t.budget_max, "train.budget_max")
    if not cfg.model.elastic and t.budget_draw != "full":
        raise UserError(f"a plain backbone (model.elit=false) has no budgets: set train.budget_draw=full "
                         f"(got {t.budget_draw!r})")
    if cfg.model.backbone.prediction != "velocity":
        raise UserError(f"elit train trains rectified-flow velocity models; model.prediction="
                         f"{cfg.model.backbone.prediction!r} is for converted checkpoints (set model.prediction=velocity)")
    if not 0.0 <= t.class_dropout_prob < 1.0:
        raise UserError(f"train.class_dropout_prob must lie in [0, 1), got {t.class_dropout_prob}")
    if t.lr_schedule not in ("constant", "cosine"):
        raise UserError(f"train.lr_schedule must be 'constant' or 'cosine', got {t.lr_schedule!r}")
    if t.time_distribution not in ("logit_normal", "uniform"):
        raise UserError(f"train.time_distribution must be 'logit_normal' or 'uniform', got {t.time_distribution!r}")
    _at_least(t.max_steps, 1, "train.max_steps")
    _at_least(t.global_batch_size, 1, "train.global_batch_size")
    _at_least(t.seed, 0, "train.seed")
    _at_least(t.warmup_steps, 0, "train.warmup_steps", " (0 = no warm-up)")
    _at_least(t.max_nonfinite_steps, 0, "train.max_nonfinite_steps", " (0 = stop at the first NaN/Inf)")
    if t.lr <= 0:
        raise UserError(f"train.lr must be > 0, got {t.lr}")
    _at_least(t.weight_decay, 0.0, "train.weight_decay")
    _at_least(t.grad_clip, 0.0, "train.grad_clip", " (0 = no clipping)")
    if t.time_std <= 0 or t.time_shift <= 0:
        raise UserError(f"train.time_std and train.time_shift must be > 0, got {t.time_std} and {t.time_shift}")
    betas = t.betas
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise UserError(f"train.betas must be two numbers in [0, 1), e.g. [0.9, 0.999]; got {betas!r}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise UserError(f"train.ema_decay must lie in [0, 1), got {t.ema_decay}")
    for name in ("log_every", "ckpt_every", "keep_last", "t_bins", "sample_steps", "sample_per_row"):
        _at_least(getattr(lg, name), 1, f"log.{name}")
    _at_least(lg.sample_every, 0, "log.sample_every", " (0 = only at the end)")
    if lg.sample_budgets is not None and not isinstance(lg.sample_budgets, list):
        raise UserError(f"log.sample_budgets must be a list of budgets (latents per group) or null, "
                         f"got {lg.sample_budgets!r}")
    _at_least(sy.threads, 0, "system.threads", " (0 = auto)")
    _at_least(sy.num_workers, 0, "system.num_workers")
    if sy.parallel not in ("ddp", "fsdp"):
        raise UserError(f"system.parallel must be 'ddp' or 'fsdp', got {sy.parallel!r}")
    if sy.precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"system.precision must be 'auto', 'bf16' or 'fp32', got {sy.precision!r}")
    if sy.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"system.device must be 'auto', 'cpu' or 'cuda', got {sy.device!r}")


def load_config(name_or_file: str, overrides: list[str] = ()) -> RunConfig:
    return resolve_config(apply_overrides(read_yaml(name_or_file), list(overrides)))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
