"""Flax models. Every model maps ``(pixels uint8 [B, ...], drop bool | None)`` to logits."""

import flax.linen as nn

from jaxpriv.models.resnet import ResNet
from jaxpriv.models.vit import VideoViT, ViT

MODELS = {"vit": ViT, "video_vit": VideoViT, "resnet": ResNet}


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Instantiates the model called ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes=num_classes, **kwargs)
