"""Tiny randomly initialised Stable Diffusion inpainting pipelines, built offline from configs.

The models are a few hundred kB and run at a 32×32 px resolution (UNet ``sample_size`` 16, VAE
scale factor 2), so that a whole inpainting takes milliseconds on CPU. Every weight comes from
``torch.manual_seed``: the same pipeline in every run. The tokenizer is a CLIP BPE built from a
hand-written ``vocab.json``/``merges.txt`` (single characters and a few merges).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
MERGES = ["p e", "o n</w>", "pe r", "s on</w>", "per son</w>"]
BLOCKS = (16, 32)  # UNet and ControlNet channels per level
DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
EMBED = 32  # text embedding width = cross-attention width


def write_tokenizer(folder: Path) -> Path:
    """Writes a CLIP ``vocab.json`` and ``merges.txt`` (lower-case text) into ``folder``."""
    chars = string.ascii_lowercase + string.digits + ",.!?'-"
    tokens = [*chars, *(c + "</w>" for c in chars)]
    tokens += [merge.replace(" ", "") for merge in MERGES] + SPECIAL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return folder


def tokenizer(folder: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(
        write_tokenizer(folder), model_max_length=77, local_files_only=True
    )


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=9,
        out_channels=4,
        block_out_channels=BLOCKS,
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=DOWN,
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=EMBED,
        attention_head_dim=4,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def _text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=EMBED,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config).eval()


def inpaint_pipeline(folder: Path, seed: int = 0) -> StableDiffusionInpaintPipeline:
    """A tiny random inpainting pipeline on CPU, fp32; ``folder`` receives the tokenizer files."""
    torch.manual_seed(seed)
    words = tokenizer(folder)
    pipe = StableDiffusionInpaintPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(len(words)),
        tokenizer=words,
        unet=_unet(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def controlnet(seed: int = 1) -> ControlNetModel:
    """A tiny pose ControlNet fitting :func:`inpaint_pipeline`; its zero-initialised output
    convolutions are drawn at random so that the pose image changes the result."""
    torch.manual_seed(seed)
    net = ControlNetModel(
        in_channels=4,
        block_out_channels=BLOCKS,
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=DOWN,
        cross_attention_dim=EMBED,
        attention_head_dim=4,
        conditioning_embedding_out_channels=(8, 16),  # one stride-2 step: VAE scale factor 2
    )
    zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block]
    zero_convs.append(net.controlnet_cond_embedding.conv_out)
    for conv in zero_convs:
        torch.nn.init.normal_(conv.weight, std=0.3)
    return net


def controlnet_pipeline(pipe: StableDiffusionInpaintPipeline, net: ControlNetModel):
    """``pipe``'s components with the pose ControlNet ``net``."""
    control = StableDiffusionControlNetInpaintPipeline(
        **{**pipe.components, "controlnet": net}, requires_safety_checker=False
    )
    control.set_progress_bar_config(disable=True)
    return control


def save(pipe: StableDiffusionInpaintPipeline, folder: Path) -> Path:
    """Saves ``pipe`` as a diffusers folder (``model_index.json`` and one folder per part)."""
    pipe.save_pretrained(folder)
    return folder
