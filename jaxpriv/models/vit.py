"""Vision transformers for images and videos that can drop tokens.

One encoder serves both: an image is cut into ``p×p`` patches, a video into
``t×p×p`` tubelets. ``drop`` is a per-pixel mask of content to remove (the
sensitive pixels, for the MaskDP public view): every token that touches a
dropped pixel is removed from attention, so the output does not depend on it.
A learned class token is always kept and carries the prediction, so an example
whose every token is dropped still has a well-defined (input-independent) output.

``max_kept_tokens`` (optional) makes views with a ``drop`` mask cheap: the kept
tokens are gathered (in raster order) into a fixed-size array of that length
before the encoder runs, instead of being masked among all tokens. The result
is the same as masking while an example keeps at most that many tokens; past
that, the last kept tokens are left out. Which tokens are kept depends only on
the mask, so this never makes a view depend on dropped content.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


def patchify(x: jnp.ndarray, patch: Sequence[int]) -> jnp.ndarray:
  """Splits ``x`` of shape ``[B, *spatial, C]`` into ``[B, tokens, prod(patch)·C]``."""
  batch, *spatial, channels = x.shape
  if len(spatial) != len(patch) or any(s % p for s, p in zip(spatial, patch)):
    raise ValueError(f"input of spatial shape {tuple(spatial)} cannot be cut "
                     f"into patches of shape {tuple(patch)}")
  grid = [s // p for s, p in zip(spatial, patch)]
  shape = [batch]
  for g, p in zip(grid, patch):
    shape += [g, p]
  x = x.reshape(*shape, channels)
  n = len(patch)
  grid_axes = [1 + 2 * i for i in range(n)]
  inner_axes = [2 + 2 * i for i in range(n)]
  x = x.transpose(0, *grid_axes, *inner_axes, 1 + 2 * n)
  return x.reshape(batch, math.prod(grid), math.prod(patch) * channels)


def token_keep_mask(drop: jnp.ndarray, patch: Sequence[int]) -> jnp.ndarray:
  """``[B, *spatial]`` bool pixel mask → ``[B, tokens]``: True where no pixel is dropped."""
  return ~jnp.any(patchify(drop[..., None], patch), axis=-1)


def normalize_pixels(x: jnp.ndarray) -> jnp.ndarray:
  """uint8 pixels → float32 in [-1, 1); 128 (the public fill of removed pixels) maps to 0."""
  return (x.astype(jnp.float32) - 128.0) / 128.0


class EncoderBlock(nn.Module):
  """Pre-norm transformer block; ``mask`` is ``[B, 1, 1, tokens]`` (keys to attend to)."""

  heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x, mask):
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads)(y, y, mask=mask)
    x = x + y
    y = nn.LayerNorm()(x)
    y = nn.Dense(self.mlp_dim)(y)
    y = nn.gelu(y)
    y = nn.Dense(x.shape[-1])(y)
    return x + y


class ViT(nn.Module):
  """Vision transformer on ``[B, H, W, 3]`` images (or ``[B, T, H, W, 3]`` with a 3-D patch)."""

  num_classes: int
  patch: Sequence[int] = (4, 4)
  width: int = 64
  depth: int = 2
  heads: int = 4
  mlp_dim: int = 128
  max_kept_tokens: int | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop: jnp.ndarray | None = None) -> jnp.ndarray:
    """Logits ``[B, num_classes]``; ``drop`` (bool ``x.shape[:-1]``) removes tokens."""
    tokens = nn.Dense(self.width, name="embed")(patchify(normalize_pixels(x), self.patch))
    batch, length, _ = tokens.shape
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, length, self.width))
    cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.width))
    tokens = tokens + pos
    mask = None
    if drop is not None:
      keep = token_keep_mask(drop, self.patch)
      if self.max_kept_tokens is not None and self.max_kept_tokens < length:
        kept_first = jnp.argsort(~keep, axis=1, stable=True)[:, :self.max_kept_tokens]
        tokens = jnp.take_along_axis(tokens, kept_first[..., None], axis=1)
        keep = jnp.take_along_axis(keep, kept_first, axis=1)
      keep = jnp.concatenate([jnp.ones((batch, 1), bool), keep], 1)
      mask = keep[:, None, None, :]
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.width)), tokens], 1)
    for i in range(self.depth):
      tokens = EncoderBlock(self.heads, self.mlp_dim, name=f"block{i}")(tokens, mask)
    cls_out = nn.LayerNorm(name="final_norm")(tokens[:, 0])
    return nn.Dense(self.num_classes, name="head")(cls_out)


class VideoViT(ViT):
  """ViT on ``[B, T, H, W, 3]`` clips with ``t×p×p`` tubelet embedding."""

  patch: Sequence[int] = (2, 4, 4)
