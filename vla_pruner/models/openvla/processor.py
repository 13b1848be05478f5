"""Prompt + image -> model inputs, like the official PrismaticProcessor.

`OpenVLAProcessor(prompt, image)` returns `input_ids`, `attention_mask` (the tokenizer's, with BOS) and
`pixel_values` [1, 6, H, W]: the image resized per backbone (bicubic; a no-op on 224x224 input), scaled to
[0, 1] and normalised with each backbone's mean/std from preprocessor_config.json, channels stacked.
The image is a PIL image or an HxWx3 numpy array (uint8, or float in [0, 1]); see `as_rgb_image`.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from vla_pruner.models.checkpoint import CheckpointError, resolve_checkpoint

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def prompt_for(instruction: str) -> str:
    """The OpenVLA prompt for a task instruction (the model expects it lower-cased)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


ImageLike = Image.Image | np.ndarray
_WIDE_PIL_MODES = ("F", "I")  # 32-bit float / int pixels: convert("RGB") clips them, a [0, 1] image turns black


def as_rgb_image(image: ImageLike) -> Image.Image:
    """An 8-bit RGB PIL image from a PIL image or an HxWx3 array: uint8 as is, float in [0, 1] scaled by 255
    and rounded. Anything else is a ValueError naming what was given, never a silently black or wrong image."""
    if isinstance(image, Image.Image):
        if image.mode.split(";")[0] in _WIDE_PIL_MODES:
            raise ValueError(f"image: PIL mode {image.mode!r} is not 8-bit; pass an 8-bit (e.g. RGB) PIL image "
                             "or an HxWx3 numpy array (uint8, or float in [0, 1])")
        return image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a PIL image or an HxWx3 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected an HxWx3 (RGB, channels last) array, got shape {image.shape}")
    if image.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(image))
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError(f"image: float ({image.dtype}) array holds NaN or inf")
        low, high = image.min(), image.max()
        if low < 0.0 or high > 1.0:
            raise ValueError(f"image: a float ({image.dtype}) array must hold values in [0, 1], "
                             f"got [{low:g}, {high:g}]; pass uint8 for 0..255 pixels")
        return Image.fromarray(np.round(image.astype(np.float64) * 255.0).astype(np.uint8))
    raise ValueError(f"image: array dtype {image.dtype} is not supported; pass uint8 (0..255) or float in [0, 1]")


class ImageProcessor:
    def __init__(self, sizes: list[tuple[int, int]], means: list[list[float]], stds: list[list[float]],
                 interpolations: list[str]):
        self.sizes, self.interpolations = sizes, interpolations
        self.means = [np.asarray(m, dtype=np.float32) for m in means]
        self.stds = [np.asarray(s, dtype=np.float32) for s in stds]

    @classmethod
    def from_config(cls, config: dict) -> "ImageProcessor":
        sizes = [tuple(s[1:]) for s in config["input_sizes"]]
        return cls(sizes, config["means"], config["stds"], config["interpolations"])

    def __call__(self, image: ImageLike) -> torch.Tensor:
        image = as_rgb_image(image)
        planes = []
        for (h, w), mean, std, interp in zip(self.sizes, self.means, self.stds, self.interpolations):
            resized = image if image.size == (w, h) else image.resize((w, h), _PIL_FILTERS[interp])
            x = np.asarray(resized, dtype=np.float32) / 255.0
            planes.append(((x - mean) / std).transpose(2, 0, 1))
        return torch.from_numpy(np.concatenate(planes, axis=0))[None]


_SENTENCEPIECE_MODULES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}  # module -> package


def _check_sentencepiece(directory: Path) -> None:
    """A checkpoint with only tokenizer.model (the official OpenVLA layout) is converted by transformers with
    sentencepiece and protobuf; without them it tries tiktoken and fails with a message about tiktoken."""
    if (directory / "tokenizer.json").is_file() or not (directory / "tokenizer.model").is_file():
        return
    missing = []
    for module, package in _SENTENCEPIECE_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise CheckpointError(f"checkpoint {directory} ships its tokenizer only as tokenizer.model (sentencepiece), "
                              f"which needs {' and '.join(missing)}: pip install sentencepiece protobuf")


class OpenVLAProcessor:
    def __init__(self, tokenizer, image_processor: ImageProcessor):
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path) -> "OpenVLAProcessor":
        directory = resolve_checkpoint(path_or_id)
        config_file = directory / "preprocessor_config.json"
        if not config_file.is_file():
            raise CheckpointError(f"no preprocessor_config.json in checkpoint directory {directory}")
        image_processor = ImageProcessor.from_config(json.loads(config_file.read_text()))
        _check_sentencepiece(directory)
        # AutoTokenizer peeks at config.json and warns that `openvla` is not a transformers model type
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        finally:
            hf_logging.set_verbosity(verbosity)
        return cls(tokenizer, image_processor)

    def __call__(self, text: str, images: ImageLike) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(text, return_tensors="pt")
        return {
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "pixel_values": self.image_processor(images),
        }
