"""The model side of elit: layers, the latent interface, budgets, configs, backbone adapters and the
ELIT wrapper. It imports nothing else from elit, so it can be read (and vendored) on its own."""
from elit.model.backbones import BACKBONES, Backbone, BackboneArgs, Context
from elit.model.budgets import BudgetSpace
from elit.model.compiling import compile_blocks
from elit.model.condition import TextCondition
from elit.model.config import ModelConfig, Split
from elit.model.interface import InterfaceConfig, LatentInterface
from elit.model.presets import MODEL_PRESETS, create_model, list_models, preset_config
from elit.model.wrapper import ELITModel

__all__ = ["BACKBONES", "Backbone", "BackboneArgs", "BudgetSpace", "Context", "ELITModel", "InterfaceConfig",
           "LatentInterface", "MODEL_PRESETS", "ModelConfig", "Split", "TextCondition", "compile_blocks", "create_model",
           "list_models", "preset_config"]
