"""Backbone adapters. Importing this package registers every built-in backbone."""
from elit.backbones.base import BACKBONES, Backbone, ForwardState, register_backbone
from elit.backbones import dit  # noqa: F401  (registers "dit")

__all__ = ["BACKBONES", "Backbone", "ForwardState", "register_backbone"]
