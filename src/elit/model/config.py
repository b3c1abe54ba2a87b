"""The model config: frozen, in three parts (backbone arguments, latent interface, head/core/tail split).

    ModelConfig(backbone=DiTArgs(hidden_size=384, ...), interface=InterfaceConfig(window=(4, 4)),
                split=Split(head=2, tail=2))         # ELIT-DiT-S/2; interface=None: the plain DiT

Derived values (the window at build size, J, the budget space, the block layout) are properties,
computed in one place. The one spelling is the structured dict of `to_dict()`, nested by part:
    {"backbone": {"name": "dit", "hidden_size": 384, ...}, "interface": {"window": [4, 4], ...},
     "split": {"head": 2, "tail": 2}}
(config.json of a saved model, the `model:` section of a YAML config, `model.interface.qk_norm=head`
on the command line). Keyword names are its shorthand, one function (`section_parts`) places them:
`create_model(name, hidden_size=96)`, `config.override(head_depth=1, window=[2, 2])`,
`model.hidden_size=96`: backbone fields by name, `elit`, `head_depth` / `tail_depth` (the split), and
the interface fields, the two that clash with backbone fields prefixed (`interface_qk_norm`,
`interface_mlp_bias`). The flat form of files written before 0.3 (YAML model sections, model folders
of format elit-model/1) is read at their edge by `from_flat`.
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

    def override(self, **fields) -> "ModelConfig":
        """A copy with fields replaced, by keyword name (hidden_size=96, window=[2, 2], elit=False) or by
        part (interface={"qk_norm": "head"}); see `section_parts`."""
        return build_config(section_parts(fields), base=self)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """The structured form saved in config.json."""
        return {"backbone": self.backbone.to_dict(),
                "interface": None if self.interface is None else _listify(dataclasses.asdict(self.interface)),
                "split": None if self.split is None else dataclasses.asdict(self.split)}

    @classmethod
    def from_fields(cls, **fields) -> "ModelConfig":
        """A config from keyword names (see `section_parts`) on a DiT with the class defaults."""
        return build_config(section_parts(fields))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The structured dict of `to_dict()` -> ModelConfig (a flat dict is refused: see from_flat)."""
        if not isinstance(d, dict):
            raise UserError(f"a model config must be a mapping, got {type(d).__name__}")
        if not isinstance(d.get("backbone"), dict):
            raise UserError("a model config is a mapping of backbone, interface and split (config.json's "
                            f"'model'); got the keys {sorted(d)[:6]}: a flat one is read by ModelConfig.from_flat")
        return cls._from_structured(d)

    @classmethod
    def _from_structured(cls, d: dict) -> "ModelConfig":
        unknown = sorted(set(d) - {"backbone", "interface", "split"})
        if unknown:
            raise UserError(f"unknown model config part(s) {unknown}; expected backbone, interface, split")
        bb = dict(d["backbone"])
        args_cls = _args_class(bb.pop("name", "dit"))
        interface = d.get("interface")
        split = d.get("split")
        return cls(backbone=build_dataclass(args_cls, bb, "model.backbone"),
                   interface=None if interface is None else build_dataclass(InterfaceConfig, interface, "model.interface"),
                   split=None if split is None else build_dataclass(Split, split, "model.split"))

    @classmethod
    def from_flat(cls, d: dict) -> "ModelConfig":
        """The flat dict of files written before 0.3 (YAML model sections, model folders of format
        elit-model/1): backbone fields by name, `elit` (default true), head_depth / tail_depth, and
        the interface fields. Read at those files' edge only."""
        if not isinstance(d, dict):
            raise UserError(f"a model config must be a mapping, got {type(d).__name__}")
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


PARTS = ("backbone", "interface", "split")


def section_parts(section: dict) -> dict:
    """A model section in the nested spelling, keyword names, or both (a YAML section and the command
    line's `model.key=value`) -> {"preset", "elit", "backbone": {...}, "interface": {...}, "split": {...},
    "nested": bool}: every field in its part. A field given twice with two values is refused."""
    if not isinstance(section, dict):
        raise UserError(f"a model section must be a mapping, got {section!r}")
    out = {"preset": None, "elit": None, "backbone": {}, "interface": {}, "split": {},
           "nested": any(k in PARTS for k in section)}
    placed, plain = {}, False

    def put(part, name, value, given):
        if (part, name) in placed and placed[part, name][0] != value:
            raise UserError(f"model {part}.{name} is given twice, as {placed[part, name][1]}="
                            f"{placed[part, name][0]!r} and as {given}={value!r}; give it once")
        placed[part, name] = (value, given)
        out[part][name] = value

    for key, value in section.items():
        if key == "preset":
            out["preset"] = value
        elif key == "elit":
            if not isinstance(value, bool):
                raise UserError(f"model.elit must be true or false, got {value!r}")
            out["elit"] = value
        elif key == "backbone" and isinstance(value, str):
            put("backbone", "name", value, "backbone")
        elif key in ("interface", "split") and value is None:    # to_dict()'s plain model
            plain = True
        elif key in PARTS:
            if not isinstance(value, dict):
                raise UserError(f"model.{key} must be a mapping of its fields, got {value!r}")
            for name, v in value.items():
                put(key, name, v, f"{key}.{name}")
        elif key in _FLAT_SPLIT:
            put("split", _FLAT_SPLIT[key], value, key)
        elif key in _FLAT_INTERFACE:
            put("interface", _FLAT_INTERFACE[key], value, key)
        else:
            put("backbone", key, value, key)
    if plain and out["elit"] is None:   # `interface: null` says plain unless `elit` says otherwise
        out["elit"] = False
    return out


def nested_section(section: dict) -> dict:
    """A model section rewritten in the nested spelling ({"preset"?, "elit"?, "backbone": {...},
    "interface": {...} or None, "split": {...} or None}), so later fields (command-line overrides)
    land in their part and replace what the file set there."""
    parts = section_parts(section)
    out = {k: parts[k] for k in ("preset", "elit") if parts[k] is not None}
    if "elit" not in out and "preset" not in out and not parts["nested"]:
        out["elit"] = True          # a flat section without `elit` was an ELIT model (the pre-0.3 rule)
    out["backbone"] = parts["backbone"]
    if out.get("elit") is False:
        out["interface"] = out["split"] = None
    else:
        out["interface"], out["split"] = parts["interface"], parts["split"]
    return out


def build_config(parts: dict, base: ModelConfig | None = None) -> ModelConfig:
    """`section_parts` on top of `base` (none: a DiT with the class defaults). ELIT when the parts say elit, else when the base is or interface / split fields are
    given; a flat section without `elit` is ELIT (the rule of files written before 0.3)."""
    if parts["preset"] is not None:   # the caller's to resolve (elit.train.config.model_config)
        raise UserError("model.preset names where a config file's model section starts; here start from "
                        "elit.create_model(name, ...) or preset_config(name, ...) instead")
    d = base.to_dict() if base is not None else {"backbone": {"name": "dit"}, "interface": None, "split": None}
    name = parts["backbone"].get("name", d["backbone"].get("name"))
    if name != d["backbone"].get("name"):
        if base is not None:
            raise UserError(f"model backbone {name!r} is not the {d['backbone']['name']!r} of the preset or model it "
                            f"starts from; start from a preset of that kind (elit.list_models()) or give no preset")
        d["backbone"] = {"name": name}
    d["backbone"].update(parts["backbone"])
    elastic = parts["elit"]
    if elastic is None:   # as the base; without one, as the fields say (flat: ELIT, the pre-0.3 rule)
        given = bool(parts["interface"] or parts["split"])
        elastic = d["interface"] is not None if base is not None else (given or not parts["nested"])
    if elastic:
        d["interface"] = {**(d["interface"] or {}), **parts["interface"]}
        d["split"] = {**(d["split"] or {"head": 2, "tail": 2}), **parts["split"]}
    else:
        if parts["interface"] or parts["split"]:
            names = sorted({*parts["interface"], *parts["split"]})
            raise UserError(f"model settings {names} are for an ELIT model, but this one is plain (elit: false)")
        d["interface"] = d["split"] = None
    return ModelConfig.from_dict(d)


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
