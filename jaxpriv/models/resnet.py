"""A small ResNet with GroupNorm (no batch statistics, so per-example gradients are exact)."""

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxpriv.models.vit import normalize_pixels

PUBLIC_FILL = 0.0  # value of removed pixels after normalisation (mid grey)


class ResidualBlock(nn.Module):
    features: int
    stride: int
    groups: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.features, (3, 3), (self.stride, self.stride), use_bias=False)(x)
        y = nn.relu(nn.GroupNorm(self.groups)(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = nn.GroupNorm(self.groups)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = nn.GroupNorm(self.groups)(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet on ``[B, H, W, 3]``; ``drop`` pixels are replaced by a fixed public fill."""

    convolutional: ClassVar[bool] = True  # see train.microbatch_loop
    num_classes: int
    stage_features: Sequence[int] = (16, 32, 64)
    groups: int = 8

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, drop: jnp.ndarray | None = None, sensitive: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        del sensitive  # the fill makes the public view; the mask is not an input
        x = normalize_pixels(x)
        if drop is not None:
            x = jnp.where(drop[..., None], PUBLIC_FILL, x)
        x = nn.Conv(self.stage_features[0], (3, 3), use_bias=False, name="stem")(x)
        x = nn.relu(nn.GroupNorm(self.groups)(x))
        for i, features in enumerate(self.stage_features):
            x = ResidualBlock(features, 1 if i == 0 else 2, self.groups)(x)
        return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))
