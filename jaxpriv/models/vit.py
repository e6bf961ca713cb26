"""Vision transformers for images and videos that can drop tokens.

One encoder serves both: an image is cut into ``p×p`` patches, a video into
``t×p×p`` tubelets. ``drop`` is a per-pixel mask of content that is absent (the
sensitive pixels, in the MaskDP public view): every token that touches a
dropped pixel is removed, so the output does not depend on it.

Two heads:

* ``split_streams=False``: a class token, always kept, carries the prediction,
  so an example whose every token is dropped still has a defined output.
* ``split_streams=True`` (mask-aware): ``sensitive`` (the public per-pixel mask)
  tags each token as private (touches a sensitive pixel) or public. Public
  tokens attend only to public tokens; private tokens attend to all. The logits
  are a public head on the mean public token plus a private head on the mean
  private token. The public stream is then computed identically with or without
  the sensitive content, which is what lets MaskDP's noise-free public gradient
  transfer to the full input.

``max_kept_tokens`` (optional) makes views with a ``drop`` mask cheap: the kept
tokens are gathered (in raster order) into a fixed-size array of that length
before the encoder runs, instead of being masked among all tokens. The result
equals masking while an example keeps at most that many tokens; past that, the
last kept tokens are left out. Which tokens are kept depends only on the mask,
so this never makes a view depend on dropped content.
"""

import math
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp


def patchify(x: jnp.ndarray, patch: Sequence[int]) -> jnp.ndarray:
    """Splits ``x`` of shape ``[B, *spatial, C]`` into ``[B, tokens, prod(patch)·C]``."""
    batch, *spatial, channels = x.shape
    if len(spatial) != len(patch) or any(s % p for s, p in zip(spatial, patch)):
        raise ValueError(
            f"input of spatial shape {tuple(spatial)} cannot be cut "
            f"into patches of shape {tuple(patch)}"
        )
    grid = [s // p for s, p in zip(spatial, patch)]
    shape = [batch]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(*shape, channels)
    n = len(patch)
    x = x.transpose(0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)
    return x.reshape(batch, math.prod(grid), math.prod(patch) * channels)


def tokens_touching(mask: jnp.ndarray, patch: Sequence[int]) -> jnp.ndarray:
    """``[B, *spatial]`` bool pixel mask → ``[B, tokens]``: True where any pixel is set."""
    return jnp.any(patchify(mask[..., None], patch), axis=-1)


def normalize_pixels(x: jnp.ndarray) -> jnp.ndarray:
    """uint8 pixels → float32 in [-1, 1); 128 (the public fill of removed pixels) maps to 0."""
    return (x.astype(jnp.float32) - 128.0) / 128.0


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of ``x [B, N, D]`` over the tokens where ``mask [B, N]`` is True (0 if none)."""
    total = jnp.einsum("bnd,bn->bd", x, mask.astype(x.dtype))
    return total / jnp.maximum(1.0, jnp.sum(mask, axis=1, keepdims=True))


def attention(query, key, value, mask=None, precision=None, **unused):
    """Scaled dot-product attention for ``nn.MultiHeadDotProductAttention`` (no dropout, no bias).

    Batch and head axes are merged into one leading axis, so XLA sees plain 3-D
    batched matmuls. Flax's default einsums keep a size-1 batch axis under
    ``vmap`` over single examples (the per-example gradient path), which XLA's
    CPU backend answers with layout copies of the attention weights: this
    version makes the DP-SGD step ~10% faster there.
    """
    if unused.get("dropout_rate", 0.0) or unused.get("bias") is not None:
        raise ValueError("jaxpriv.models.vit.attention supports no dropout and no bias")
    *batch, q_len, heads, depth = query.shape
    k_len = key.shape[-3]

    def heads_first(x):  # [..., T, H, D] -> [N·H, T, D]
        x = x.reshape(-1, x.shape[-3], heads, depth)
        return jnp.swapaxes(x, 1, 2).reshape(-1, x.shape[1], depth)

    scores = jnp.einsum(
        "nqd,nkd->nqk", heads_first(query / math.sqrt(depth)), heads_first(key), precision=precision
    )
    if mask is not None:
        mask = jnp.broadcast_to(mask, (*batch, heads, q_len, k_len)).reshape(scores.shape)
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("nqk,nkd->nqd", weights, heads_first(value), precision=precision)
    return jnp.swapaxes(out.reshape(-1, heads, q_len, depth), 1, 2).reshape(
        *batch, q_len, heads, depth
    )


class AddPositionEmbedding(nn.Module):
    """``x [B, N, D]`` + a learned ``embedding [1, N, D]``."""

    @nn.compact
    def __call__(self, x):
        return x + self.param("embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))


class PrependClassToken(nn.Module):
    """``x [B, N, D]`` → ``[B, 1 + N, D]`` with a learned ``token [1, 1, D]`` first."""

    @nn.compact
    def __call__(self, x):
        token = self.param("token", nn.initializers.normal(0.02), (1, 1, x.shape[-1]))
        return jnp.concatenate([jnp.broadcast_to(token, (x.shape[0], 1, x.shape[-1])), x], 1)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; ``mask`` is ``[B, 1, queries, keys]`` (who may attend to whom)."""

    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x, mask):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, attention_fn=attention)(
            y, y, mask=mask
        )
        y = nn.LayerNorm()(x)
        y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp_dim)(y)))
        return x + y


class ViT(nn.Module):
    """Vision transformer on ``[B, H, W, 3]`` images (or ``[B, T, H, W, 3]`` with a 3-D patch)."""

    convolutional: ClassVar[bool] = False  # see train.microbatch_loop
    num_classes: int
    patch: Sequence[int] = (4, 4)
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 128
    split_streams: bool = False
    max_kept_tokens: int | None = None

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, drop: jnp.ndarray | None = None, sensitive: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        """Logits ``[B, num_classes]``. ``drop``, ``sensitive``: bool pixel masks ``x.shape[:-1]``."""
        tokens = nn.Dense(self.width, name="embed")(patchify(normalize_pixels(x), self.patch))
        tokens = AddPositionEmbedding(name="pos_embedding")(tokens)
        batch, length, _ = tokens.shape
        keep = jnp.ones((batch, length), bool)
        private = jnp.zeros((batch, length), bool)
        if drop is not None:
            keep = ~tokens_touching(drop, self.patch)
        if self.split_streams and sensitive is not None:
            private = tokens_touching(sensitive, self.patch)
        if drop is not None and self.max_kept_tokens is not None and self.max_kept_tokens < length:
            kept_first = jnp.argsort(~keep, axis=1, stable=True)[:, : self.max_kept_tokens]
            tokens = jnp.take_along_axis(tokens, kept_first[..., None], axis=1)
            keep = jnp.take_along_axis(keep, kept_first, axis=1)
            private = jnp.take_along_axis(private, kept_first, axis=1)
        if self.split_streams:
            return self._split_streams(tokens, keep, private)
        return self._class_token(tokens, None if drop is None else keep)

    def _encode(self, tokens, mask):
        for i in range(self.depth):
            tokens = EncoderBlock(self.heads, self.mlp_dim, name=f"block{i}")(tokens, mask)
        return nn.LayerNorm(name="final_norm")(tokens)

    def _class_token(self, tokens, keep):
        """``keep=None``: every token is present, and attention needs no mask."""
        batch = tokens.shape[0]
        tokens = PrependClassToken(name="cls")(tokens)
        mask = None
        if keep is not None:
            mask = jnp.concatenate([jnp.ones((batch, 1), bool), keep], 1)[:, None, None, :]
        encoded = self._encode(tokens, mask)
        return nn.Dense(self.num_classes, name="head")(encoded[:, 0])

    def _split_streams(self, tokens, keep, private):
        # Query i may attend key j if j is present and (i is private or j is public).
        mask = keep[:, None, :] & (private[:, :, None] | ~private[:, None, :])
        encoded = self._encode(tokens, mask[:, None])
        public_logits = nn.Dense(self.num_classes, name="public_head")(
            masked_mean(encoded, keep & ~private)
        )
        private_logits = nn.Dense(self.num_classes, use_bias=False, name="private_head")(
            masked_mean(encoded, keep & private)
        )
        return public_logits + private_logits


class VideoViT(ViT):
    """ViT on ``[B, T, H, W, 3]`` clips with ``t×p×p`` tubelet embedding."""

    patch: Sequence[int] = (2, 4, 4)
