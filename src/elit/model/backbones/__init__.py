"""Backbone adapters. Importing this package registers every built-in backbone."""
from elit.model.backbones.base import BACKBONES, Backbone, BackboneArgs, Context, CoreLayout, register_backbone
from elit.model.backbones.dit import DiTArgs, DiTBackbone
from elit.model.backbones.flux import FluxArgs, FluxBackbone
from elit.model.backbones.hdit import HDiTArgs, HDiTBackbone
from elit.model.backbones.qwenimage import QwenImageArgs, QwenImageBackbone
from elit.model.backbones.sd3 import SD3Args, SD3Backbone
from elit.model.backbones.uvit import UViTArgs, UViTBackbone
from elit.model.backbones.uvit_original import UViTOriginalArgs, UViTOriginalBackbone
from elit.model.backbones.video import VideoDiTArgs, VideoDiTBackbone
from elit.model.backbones.wan import WanArgs, WanBackbone

__all__ = ["BACKBONES", "Backbone", "BackboneArgs", "Context", "CoreLayout", "DiTArgs", "DiTBackbone", "FluxArgs", "FluxBackbone", "HDiTArgs", "HDiTBackbone",
           "QwenImageArgs", "QwenImageBackbone", "SD3Args", "SD3Backbone", "UViTArgs", "UViTBackbone",
           "UViTOriginalArgs", "UViTOriginalBackbone", "VideoDiTArgs", "VideoDiTBackbone", "WanArgs", "WanBackbone",
           "register_backbone"]
