"""Backbone adapters. Importing this package registers every built-in backbone."""
from elit.model.backbones.base import BACKBONES, Backbone, BackboneArgs, Context, register_backbone
from elit.model.backbones.dit import DiTArgs, DiTBackbone
from elit.model.backbones.uvit import UViTArgs, UViTBackbone
from elit.model.backbones.uvit_original import UViTOriginalArgs, UViTOriginalBackbone

__all__ = ["BACKBONES", "Backbone", "BackboneArgs", "Context", "DiTArgs", "DiTBackbone", "UViTArgs", "UViTBackbone",
           "UViTOriginalArgs", "UViTOriginalBackbone", "register_backbone"]
