"""The rule for adding a backbone (docs/architecture.md), kept honest: every adapter registered in
elit.model.backbones.BACKBONES has presets (or, for a wrapped diffusers model, make_elastic), a
shared-suite test class under tests/backbones/, and its own analytic FLOP count, which the suite
checks against FlopCounterMode at every budget."""
import importlib.util
import pathlib

from backbone_suite import BackboneSuite
from elit.model import MODEL_PRESETS, preset_config
from elit.model.backbones import BACKBONES, Backbone

HERE = pathlib.Path(__file__).parent


def suite_classes() -> list[type]:
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        module = _load(path)
        found += [v for v in vars(module).values()
                  if isinstance(v, type) and issubclass(v, BackboneSuite) and v.__name__.startswith("Test")]
    return found


def _load(path):
    """A test module by path (tests/ is not a package), under a name pytest does not collect."""
    spec = importlib.util.spec_from_file_location(f"registry_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_backbone_has_presets_a_suite_and_its_own_flops():
    covered = {type(cls().config().backbone).name for cls in suite_classes()}
    with_presets = {type(preset_config(name).backbone).name for name in MODEL_PRESETS}
    for name, adapter in BACKBONES.items():
        assert name in covered, f"backbone {name!r} has no BackboneSuite subclass under tests/backbones/"
        if adapter.wraps_pretrained:      # a diffusers model: built by elit.make_elastic, not from a preset
            assert getattr(adapter, "diffusers_class", ""), name
        else:
            assert name in with_presets, f"backbone {name!r} has no preset in elit/model/presets.py"
            assert any(n.startswith("ELIT-") and type(preset_config(n).backbone).name == name for n in MODEL_PRESETS)
        assert adapter.analytic_flops.__func__ is not Backbone.analytic_flops.__func__, name
