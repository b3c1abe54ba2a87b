"""The model config: frozen, in three parts (backbone arguments, latent interface, head/core/tail split).

    ModelConfig(backbone=DiTArgs(hidden_size=384, ...), interface=InterfaceConfig(window=(4, 4)),
                split=Split(head=2, tail=2))         # ELIT-DiT-S/2; interface=None: the plain DiT

Derived values (the window at build size, J, the budget space, the block layout) are properties,
computed in one place. Two spellings convert to it:
- the structured dict of `to_dict()` (config.json of a saved model, format elit-model/2);
- a flat dict (YAML `model:` sections, `create_model(name, **overrides)`, model folders written
  before the redesign): backbone fields by name, `elit`, `head_depth`, `tail_depth`, and the
  interface fields, two of them prefixed (`interface_qk_norm`, `interface_mlp_bias`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from elit.model.backbones import BACKBONES, BackboneArgs, DiTArgs
from elit.model.budgets import BudgetSpace
from elit.model.interface import InterfaceConfig
from elit.model.positions import check_latent_pos, resolve_latent_pos
from elit.errors import UserError


@dataclass(frozen=True)
class Split:
    """How many blocks run on spatial tokens before the Read (head) and after the Write (tail)."""
    head: int
    tail: int

    def __post_init__(self):
        for name in ("head", "tail"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UserError(f"{name}_depth must be an integer >= 0, got {v!r}")


# Flat names of the interface and split fields (everything else in a flat dict is a backbone field).
_FLAT_INTERFACE = {f.name: f.name for f in dataclasses.fields(InterfaceConfig)} | {
    "interface_qk_norm": "qk_norm", "interface_mlp_bias": "mlp_bias"}
del _FLAT_INTERFACE["qk_norm"], _FLAT_INTERFACE["mlp_bias"]
_FLAT_SPLIT = {"head_depth": "head", "tail_depth": "tail"}
# Flat fields of model configs written before the redesign that are not model settings any more.
LEGACY_TRAINING_FIELDS = ("class_dropout_prob",)


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneArgs = field(default_factory=DiTArgs)
    interface: InterfaceConfig | None = None      # None: a plain backbone (all blocks on all tokens)
    split: Split | None = None

    def __post_init__(self):
        if not isinstance(self.backbone, BackboneArgs) or type(self.backbone).name not in BACKBONES:
            raise UserError(f"backbone must be the arguments of a registered backbone ({sorted(BACKBONES)}), "
                             f"got {self.backbone!r}")
        if (self.interface is None) != (self.split is None):
            raise UserError("an ELIT model needs both an interface and a head/core/tail split; a plain "
                             "backbone has neither")
        if self.interface is None:
            return
        depth, s = self.backbone.depth, self.split
        if s.head + s.tail >= depth:
            raise UserError(f"head_depth {s.head} + tail_depth {s.tail} must leave at least one core block "
                             f"of the {depth}")
        self.adapter.check_layout(self.backbone, s.head, s.tail)
        # stored resolved, so a saved config.json names the kind its model uses
        kind = resolve_latent_pos(self.interface.latent_pos, uses_rope=self.backbone.uses_rope,
                                  token_positions=self.adapter.token_positions(self.backbone))
        object.__setattr__(self, "interface", dataclasses.replace(self.interface, latent_pos=kind))
        if any(g % w for g, w in zip(self.grid, self.window)) or len(self.grid) != len(self.window):
            example = [max(1, g // 4) for g in self.grid]
            raise UserError(f"windows of {list(self.window)} tokens do not divide the {list(self.grid)} token grid "
                            f"(input_size {self.backbone.input_size} / patch {self.backbone.patch_size}); set window "
                            f"to divisors of it, e.g. {example} for 16 groups")
        self.budget_space  # noqa: B018  (validates J_min against J)
        check_latent_pos(self.interface.latent_pos, uses_rope=self.backbone.uses_rope,
                         token_positions=self.adapter.token_positions(self.backbone),
                         backbone=type(self.backbone).name, latents_per_group=self.latents_per_group,
                         window=self.window)

    # ------------------------------------------------------------------ derived values
    @property
    def adapter(self):
        return BACKBONES[type(self.backbone).name]

    @property
    def condition(self) -> str:
        """What the model is conditioned on: "class" (labels), "text" (a TextCondition) or "none".
        The one place this is decided; every sampler, server and trainer asks here."""
        if self.adapter.condition_kind == "text":
            return "text"
        return "class" if self.backbone.num_classes > 0 else "none"

    @property
    def conditional(self) -> bool:
        """Does the model take a condition guidance can drop (class labels or text)?"""
        return self.condition != "none"

    @property
    def elastic(self) -> bool:
        return self.interface is not None

    @property
    def grid(self) -> tuple[int, ...]:
        return self.backbone.grid

    @property
    def window(self) -> tuple[int, ...] | None:
        """Tokens per window per axis; default 16 groups at the build size (the paper's main setting)."""
        if self.interface is None:
            return None
        return self.interface.window or self.backbone.default_window()

    @property
    def num_groups(self) -> int | None:
        return None if self.window is None else math.prod(g // w for g, w in zip(self.grid, self.window))

    @property
    def latents_per_group(self) -> int | None:
        """J, the full budget: tokens per window unless set (K = N at full budget)."""
        if self.interface is None:
            return None
        return self.interface.latents_per_group or math.prod(self.window)

    @property
    def budget_space(self) -> BudgetSpace:
        if self.interface is None:
            return BudgetSpace()
        J = self.latents_per_group
        return BudgetSpace(J, self.interface.min_budget or max(1, J // 16))  # 1 at 256px, 4 at 512px

    @property
    def latent_table_rows(self) -> int:
        return self.interface.latent_pos_table_size or self.num_groups * self.latents_per_group

    def layout(self) -> tuple[range, range, range]:
        """Block indices of head, core and tail."""
        depth = self.backbone.depth
        if self.split is None:
            return range(depth), range(depth, depth), range(depth, depth)
        h, t = self.split.head, self.split.tail
        return range(h), range(h, depth - t), range(depth - t, depth)

    def with_input_size(self, input_size: int) -> "ModelConfig":
        """The config a model built for another input size gets (window and J follow when unset)."""
        return dataclasses.replace(self, backbone=dataclasses.replace(self.backbone, input_size=input_size))

    def override(self, **flat) -> "ModelConfig":
        """A copy with flat fields replaced (e.g. hidden_size=96, window=[2, 2], elit=False)."""
        return ModelConfig.from_dict({**self.flat(), **flat})

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """The structured form saved in config.json."""
        return {"backbone": self.backbone.to_dict(),
                "interface": None if self.interface is None else _listify(dataclasses.asdict(self.interface)),
                "split": None if self.split is None else dataclasses.asdict(self.split)}

    def flat(self) -> dict:
        """The flat form (YAML `model:` sections and keyword overrides)."""
        out = {"backbone": type(self.backbone).name,
               **{k: v for k, v in self.backbone.to_dict().items() if k != "name"}, "elit": self.elastic}
        if self.interface is not None:
            out.update({flat: getattr(self.split, name) for flat, name in _FLAT_SPLIT.items()})
            out.update({flat: getattr(self.interface, name) for flat, name in _FLAT_INTERFACE.items()})
        return _listify(out)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Structured (`to_dict`) or flat (see the module docstring) -> ModelConfig."""
        if not isinstance(d, dict):
            raise UserError(f"a model config must be a mapping, got {type(d).__name__}")
        if isinstance(d.get("backbone"), dict):
            return cls._from_structured(d)
        return cls._from_flat(d)

    @classmethod
    def _from_structured(cls, d: dict) -> "ModelConfig":
        unknown = sorted(set(d) - {"backbone", "interface", "split"})
        if unknown:
            raise UserError(f"unknown model config part(s) {unknown}; expected backbone, interface, split")
        bb = dict(d["backbone"])
        args_cls = _args_class(bb.pop("name", "dit"))
        interface = d.get("interface")
        split = d.get("split")
        return cls(backbone=build_dataclass(args_cls, bb, "backbone"),
                   interface=None if interface is None else build_dataclass(InterfaceConfig, interface, "interface"),
                   split=None if split is None else build_dataclass(Split, split, "split"))

    @classmethod
    def _from_flat(cls, d: dict) -> "ModelConfig":
        d = {k: v for k, v in d.items() if k not in LEGACY_TRAINING_FIELDS}
        args_cls = _args_class(d.pop("backbone", "dit"))
        elastic = d.pop("elit", True)
        if not isinstance(elastic, bool):
            raise UserError(f"elit must be true or false, got {elastic!r}")
        backbone_fields = {f.name for f in dataclasses.fields(args_cls)}
        unknown = sorted(set(d) - backbone_fields - set(_FLAT_INTERFACE) - set(_FLAT_SPLIT))
        if unknown:
            valid = sorted(backbone_fields | set(_FLAT_INTERFACE) | set(_FLAT_SPLIT) | {"backbone", "elit"})
            raise UserError(f"unknown config key model.{unknown[0]} (model config field(s) {unknown} of backbone "
                            f"{args_cls.name!r}); valid keys in 'model': {', '.join(valid)}")
        backbone = build_dataclass(args_cls, {k: v for k, v in d.items() if k in backbone_fields}, "model")
        if not elastic:  # interface fields of a plain model are ignored (old config.json files list them all)
            return cls(backbone=backbone)
        interface = {name: d[flat] for flat, name in _FLAT_INTERFACE.items() if flat in d}
        split = {name: d.get(flat, 2) for flat, name in _FLAT_SPLIT.items()}
        return cls(backbone=backbone, interface=build_dataclass(InterfaceConfig, interface, "model"),
                   split=build_dataclass(Split, split, "model"))


def _args_class(name) -> type[BackboneArgs]:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    return BACKBONES[name].args_class


def _listify(d: dict) -> dict:
    """Tuples -> lists, so the dict is plain JSON/YAML."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def build_dataclass(cls, values: dict, where: str):
    """cls(**values) with unknown keys refused (naming the valid ones) and YAML-ish values coerced:
    numbers given as strings ("2e-4") or ints where the field is a float; lists where it is a tuple."""
    if not isinstance(values, dict):
        raise UserError(f"{where} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown config key {where}.{unknown[0]}; valid keys in {where!r}: {', '.join(fields)}")
    out = {}
    for name, value in values.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (int, str)):
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"{where}.{name} must be a number, got {value!r}") from None
        out[name] = value
    try:
        return cls(**out)
    except TypeError as e:   # e.g. a required field missing
        raise UserError(f"{where}: {e}") from None
