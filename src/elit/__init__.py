"""elit: elastic-budget diffusion transformers (ELIT, "One Model, Many Budgets", CVPR 2026).

    import elit
    model = elit.create_model("ELIT-DiT-B/2", num_classes=10)
    v = model(x, t, y, budget=4)          # 4 latents kept per group
    model.budgets                         # valid budgets
"""
from elit.models import ELITModel, ModelConfig, create_model, list_models
from elit.hub import load_pretrained, save_pretrained

__version__ = "0.1.0"
__all__ = ["ELITModel", "ModelConfig", "create_model", "list_models", "load_pretrained", "save_pretrained",
           "sample"]


def __getattr__(name):
    # The sampler lives outside the model side; import it on first use.
    if name == "sample":
        from elit.sampling import sample
        return sample
    raise AttributeError(f"module 'elit' has no attribute {name!r}")
