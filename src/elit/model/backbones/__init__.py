"""Backbone adapters. Importing this package registers every built-in backbone."""
from elit.model.backbones.base import BACKBONES, Backbone, BackboneArgs, Context, CoreLayout, register_backbone
from elit.model.backbones.dit import DiTArgs, DiTBackbone
from elit.model.backbones.hdit import HDiTArgs, HDiTBackbone
from elit.model.backbones.uvit import UViTArgs, UViTBackbone
from elit.model.backbones.uvit_original import UViTOriginalArgs, UViTOriginalBackbone
from elit.model.backbones.video import VideoDiTArgs, VideoDiTBackbone

__all__ = ["BACKBONES", "Backbone", "BackboneArgs", "Context", "CoreLayout", "DiTArgs", "DiTBackbone", "HDiTArgs", "HDiTBackbone", "UViTArgs", "UViTBackbone",
           "UViTOriginalArgs", "UViTOriginalBackbone", "VideoDiTArgs", "VideoDiTBackbone",
           "register_backbone"]
