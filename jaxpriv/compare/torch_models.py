"""PyTorch twins of jaxpriv's Flax models, and conversion of weights and gradients.

A twin computes what its Flax model computes on the full view (``drop=None``): the pixel
normalisation ``(x - 128) / 128`` of uint8 input, the patch order of ``vit.patchify``, Flax's
tanh-approximated GELU, LayerNorm/GroupNorm epsilon 1e-6 and XLA's ``SAME`` padding (the odd
extra row/column goes after). Only the ViT class-token head (``split_streams=False``) has a twin.

Submodules carry the Flax module names (``block0.MultiHeadDotProductAttention_0.query``), so
a torch parameter's name gives its Flax path, and its module type gives the layout:

* ``nn.Linear`` weight ``[out, in]`` ↔ Flax kernel ``[in, out]``; attention kernels
  ``[width, heads, head_dim]`` (query, key, value) and ``[heads, head_dim, width]`` (out) are
  the same matrices with their head axes merged;
* ``nn.Conv2d`` weight OIHW ↔ Flax kernel HWIO;
* biases, norm scales, the position embedding and the class token: the same values (attention
  biases ``[heads, head_dim]`` flattened).

The position embedding and the class token live in leaf modules holding one parameter each, so
Opacus computes their per-sample gradients with its functorch fallback; every other parameter
belongs to a layer Opacus has a hook for (Linear, Conv2d, LayerNorm, GroupNorm).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxpriv.models import resnet as flax_resnet
from jaxpriv.models import vit as flax_vit

PyTree = Any
EPS = 1e-6  # Flax's LayerNorm and GroupNorm epsilon (torch's default is 1e-5)
# Flax leaf name of a layer's torch ``weight``, and the axis permutation with
# torch weight = flax kernel.reshape(...).permute(perm); None: same axes.
WEIGHT_LAYOUT = {
    nn.Linear: ("kernel", (1, 0)),
    nn.Conv2d: ("kernel", (3, 2, 0, 1)),
    nn.LayerNorm: ("scale", None),
    nn.GroupNorm: ("scale", None),
}


def normalize_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float32 in [-1, 1), as ``jaxpriv.models.vit.normalize_pixels``."""
    return (x.float() - 128.0) / 128.0


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``[B, *spatial, C]`` → ``[B, tokens, prod(patch)·C]`` in the order of ``vit.patchify``."""
    batch, *spatial, channels = x.shape
    grid = [s // p for s, p in zip(spatial, patch)]
    n = len(patch)
    x = x.reshape(batch, *[d for gp in zip(grid, patch) for d in gp], channels)
    x = x.permute(0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)
    return x.reshape(batch, math.prod(grid), math.prod(patch) * channels)


def same_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (built with ``padding=0``) on ``x [B, C, H, W]`` zero-padded as XLA's ``SAME``.

    Total padding ``max((⌈n/s⌉ − 1)·s + k − n, 0)`` per axis, the smaller half before: a
    stride-2 3×3 conv on an even size pads (0, 1), not torch's symmetric (1, 1).
    """
    pads = []
    for size, kernel, stride in reversed(list(zip(x.shape[2:], conv.kernel_size, conv.stride))):
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return conv(F.pad(x, pads))


class AddPositionEmbedding(nn.Module):
    """``x [B, N, D]`` + ``embedding [1, N, D]``."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(*shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding


class PrependClassToken(nn.Module):
    """``x [B, N, D]`` → ``[B, 1 + N, D]`` with ``token [1, 1, D]`` as the first token."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(*shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(len(x), -1, -1), x], dim=1)


class Attention(nn.Module):
    """Flax ``MultiHeadDotProductAttention`` (no mask or dropout) with ``nn.Linear`` projections."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` → ``[B, N, D]``."""
        batch, length, width = x.shape

        def heads_first(y):  # [B, N, D] -> [B, heads, N, head_dim]
            return y.reshape(batch, length, self.heads, -1).transpose(1, 2)

        query, key, value = (heads_first(f(x)) for f in (self.query, self.key, self.value))
        scores = (query / math.sqrt(query.shape[-1])) @ key.transpose(-1, -2)
        out = torch.softmax(scores, dim=-1) @ value
        return self.out(out.transpose(1, 2).reshape(batch, length, width))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block, as ``jaxpriv.models.vit.EncoderBlock`` (Flax names)."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.LayerNorm_0 = nn.LayerNorm(width, eps=EPS)
        self.MultiHeadDotProductAttention_0 = Attention(width, heads)
        self.LayerNorm_1 = nn.LayerNorm(width, eps=EPS)
        # Flax names the output Dense first: it is constructed before its input is computed.
        self.Dense_0 = nn.Linear(mlp_dim, width)
        self.Dense_1 = nn.Linear(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.MultiHeadDotProductAttention_0(self.LayerNorm_0(x))
        hidden = F.gelu(self.Dense_1(self.LayerNorm_1(x)), approximate="tanh")
        return x + self.Dense_0(hidden)


class ViT(nn.Module):
    """``jaxpriv.models.ViT`` / ``VideoViT`` with the class-token head, on the full view.

    Input uint8 ``[B, *spatial, channels]`` (an image, or a clip with a 3-D ``patch``);
    ``tokens`` is the number of patches. Output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        num_classes: int,
        patch: Sequence[int],
        tokens: int,
        width: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        channels: int = 3,
    ):
        super().__init__()
        self.patch = tuple(patch)
        self.depth = depth
        self.embed = nn.Linear(math.prod(patch) * channels, width)
        self.pos_embedding = AddPositionEmbedding((1, tokens, width))
        self.cls = PrependClassToken((1, 1, width))
        for i in range(depth):
            self.add_module(f"block{i}", EncoderBlock(width, heads, mlp_dim))
        self.final_norm = nn.LayerNorm(width, eps=EPS)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.cls(self.pos_embedding(self.embed(patchify(normalize_pixels(x), self.patch))))
        for i in range(self.depth):
            tokens = getattr(self, f"block{i}")(tokens)
        return self.head(self.final_norm(tokens)[:, 0])


class ResidualBlock(nn.Module):
    """As ``jaxpriv.models.resnet.ResidualBlock`` on ``[B, C, H, W]``; projects the shortcut
    (``Conv_2``, ``GroupNorm_2``) when the stride or the number of features changes the shape."""

    def __init__(self, in_features: int, features: int, stride: int, groups: int):
        super().__init__()
        self.Conv_0 = nn.Conv2d(in_features, features, 3, stride, bias=False)
        self.GroupNorm_0 = nn.GroupNorm(groups, features, eps=EPS)
        self.Conv_1 = nn.Conv2d(features, features, 3, bias=False)
        self.GroupNorm_1 = nn.GroupNorm(groups, features, eps=EPS)
        self.project = stride != 1 or in_features != features
        if self.project:
            self.Conv_2 = nn.Conv2d(in_features, features, 1, stride, bias=False)
            self.GroupNorm_2 = nn.GroupNorm(groups, features, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.GroupNorm_0(same_conv(self.Conv_0, x)))
        y = self.GroupNorm_1(same_conv(self.Conv_1, y))
        if self.project:
            x = self.GroupNorm_2(same_conv(self.Conv_2, x))
        return F.relu(x + y)


class ResNet(nn.Module):
    """``jaxpriv.models.ResNet`` on the full view: uint8 ``[B, H, W, C]`` → ``[B, classes]``."""

    def __init__(
        self,
        num_classes: int,
        stage_features: Sequence[int] = (16, 32, 64),
        groups: int = 8,
        channels: int = 3,
    ):
        super().__init__()
        self.stages = len(stage_features)
        self.stem = nn.Conv2d(channels, stage_features[0], 3, bias=False)
        self.GroupNorm_0 = nn.GroupNorm(groups, stage_features[0], eps=EPS)
        in_features = stage_features[0]
        for i, features in enumerate(stage_features):
            block = ResidualBlock(in_features, features, 1 if i == 0 else 2, groups)
            self.add_module(f"ResidualBlock_{i}", block)
            in_features = features
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous NCHW: Opacus' Conv2d per-sample gradients (``unfold2d``) assume its strides and
        # are silently wrong on the channels-last strides a bare permute (kept by F.pad) gives.
        x = normalize_pixels(x).permute(0, 3, 1, 2).contiguous()
        x = F.relu(self.GroupNorm_0(same_conv(self.stem, x)))
        for i in range(self.stages):
            x = getattr(self, f"ResidualBlock_{i}")(x)
        return self.head(x.mean(dim=(2, 3)))


def build_twin(flax_model, flax_params: PyTree) -> nn.Module:
    """An untrained twin of ``flax_model`` (hyper-parameters; shapes from ``flax_params``)."""
    params = flax_params["params"]
    if isinstance(flax_model, flax_vit.ViT):
        if flax_model.split_streams:
            raise ValueError("only the class-token ViT head (split_streams=False) has a twin")
        _, tokens, width = params["pos_embedding"]["embedding"].shape
        return ViT(
            flax_model.num_classes,
            flax_model.patch,
            tokens,
            width,
            flax_model.depth,
            flax_model.heads,
            flax_model.mlp_dim,
            channels=params["embed"]["kernel"].shape[0] // math.prod(flax_model.patch),
        )
    if isinstance(flax_model, flax_resnet.ResNet):
        return ResNet(
            flax_model.num_classes,
            flax_model.stage_features,
            flax_model.groups,
            channels=params["stem"]["kernel"].shape[2],
        )
    raise TypeError(f"no PyTorch twin for {type(flax_model).__name__}")


def _layouts(module: nn.Module) -> dict[tuple[str, ...], tuple[str, tuple[int, ...]]]:
    """Flax path (below ``"params"``) → (torch parameter name, permutation) of every parameter."""
    layouts = {}
    for prefix, layer in module.named_modules():
        path = tuple(prefix.split(".")) if prefix else ()
        for attr, param in layer.named_parameters(recurse=False):
            if attr == "bias" or type(layer) not in WEIGHT_LAYOUT:
                leaf, perm = (attr,), None
            else:
                kind, perm = WEIGHT_LAYOUT[type(layer)]
                leaf = (kind,)
            name = f"{prefix}.{attr}" if prefix else attr
            layouts[path + leaf] = (name, perm or tuple(range(param.ndim)))
    return layouts


def _matched_layouts(module: nn.Module, flax_params: PyTree):
    """``_layouts(module)``, after checking that it names exactly the leaves of ``flax_params``."""
    layouts = _layouts(module)
    flax_paths = {
        tuple(k.key for k in keys[1:])
        for keys, _ in jax.tree_util.tree_leaves_with_path({"params": flax_params["params"]})
    }
    if flax_paths != set(layouts):
        raise ValueError(
            f"parameters differ: only in Flax {sorted(flax_paths - set(layouts))}, "
            f"only in torch {sorted(set(layouts) - flax_paths)}"
        )
    return layouts


def _to_torch(leaf, shape: Sequence[int], perm: Sequence[int]) -> torch.Tensor:
    """A Flax leaf → the torch tensor of ``shape``: ``leaf.reshape(…).permute(perm)``."""
    unpermuted = [0] * len(perm)
    for axis, p in enumerate(perm):
        unpermuted[p] = shape[axis]
    return torch.from_numpy(np.asarray(leaf).reshape(unpermuted).transpose(perm).copy())


def _to_flax(tensor: torch.Tensor, shape: Sequence[int], perm: Sequence[int]) -> np.ndarray:
    """Inverse of ``_to_torch`` to a Flax leaf of ``shape``; leading extra (batch) axes are kept."""
    lead = tensor.ndim - len(perm)
    array = tensor.detach().cpu().numpy()
    array = array.transpose(*range(lead), *(lead + np.argsort(perm)))
    return array.reshape(*array.shape[:lead], *shape)


def from_flax(flax_model, flax_params: PyTree) -> nn.Module:
    """The twin of ``flax_model`` holding the weights ``flax_params`` (``{"params": …}``)."""
    module = build_twin(flax_model, flax_params)
    shapes = {name: p.shape for name, p in module.named_parameters()}
    state = {}
    for path, (name, perm) in _matched_layouts(module, flax_params).items():
        leaf = flax_params["params"]
        for key in path:
            leaf = leaf[key]
        state[name] = _to_torch(leaf, shapes[name], perm)
    module.load_state_dict(state, strict=True)
    return module


def grads_to_flax(
    module: nn.Module, named_tensors: Mapping[str, torch.Tensor], flax_params: PyTree
) -> PyTree:
    """Torch-layout tensors → a pytree shaped like ``flax_params``, with numpy leaves.

    ``named_tensors`` maps every parameter name of ``module`` to a tensor of that parameter's
    shape, optionally with leading axes (e.g. ``[B, *shape]`` per-sample gradients), which are
    kept in front of the Flax leaf shape.
    """
    layouts = _matched_layouts(module, flax_params)

    def convert(keys, leaf):
        name, perm = layouts[tuple(k.key for k in keys[1:])]
        return _to_flax(named_tensors[name], leaf.shape, perm)

    return jax.tree_util.tree_map_with_path(convert, {"params": flax_params["params"]})
