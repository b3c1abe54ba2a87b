"""elit: elastic-budget diffusion transformers (ELIT, "One Model, Many Budgets", CVPR 2026).

    import elit
    model = elit.create_model("ELIT-DiT-B/2", num_classes=10, in_channels=1, input_size=32)
    x = torch.randn(8, 1, 32, 32)                  # x_t = (1 - t) x0 + t eps
    t = torch.rand(8)                              # t in [0, 1], t = 1 is pure noise
    y = torch.randint(0, 10, (8,))                 # model.null_class_id for the unconditional pass
    v = model(x, t, y, budget=4)                   # velocity eps - x0, 4 latents kept per group
    model.budgets                                  # the valid budgets

    elastic = elit.make_elastic(qwen_image_transformer, head_depth=8, tail_depth=8, window=(16, 16))
    out = elastic(hidden_states=..., encoder_hidden_states=..., ..., budget=64)   # diffusers MM-DiTs

Names are imported on first use, so `import elit` (and `elit --help`) stays fast.
"""
from __future__ import annotations

import importlib

# The one place the version lives (pyproject.toml reads it). The distribution is `elit-diffusion`
# (`pip install elit-diffusion`): the name `elit` on PyPI belongs to an unrelated project.
__version__ = "0.3.0"

_API = {  # public name -> module that defines it
    "ELITModel": "elit.model", "ModelConfig": "elit.model", "BudgetSpace": "elit.model",
    "create_model": "elit.model", "list_models": "elit.model",
    "load_pretrained": "elit.hub", "save_pretrained": "elit.hub",
    "sample": "elit.sampling",
    "make_elastic": "elit.interop.diffusers", "ElasticTransformer": "elit.interop.diffusers",
    "TextCondition": "elit.model", "compile_blocks": "elit.model",
    "UserError": "elit.errors",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'elit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
