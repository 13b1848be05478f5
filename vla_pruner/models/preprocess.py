"""An upright camera frame -> the 224x224 image OpenVLA saw in training, without TensorFlow.

The official evaluation (after turning the benchmark's frame upright) round-trips it through JPEG, resizes it with
TensorFlow's antialiased Lanczos-3 (`tf.image.resize`), then takes a centre crop of 90% of the area and
resizes it back with `tf.image.crop_and_resize` (bilinear). The two resamplings are computed here in float
with TensorFlow's sampling rules (pixel centres at +0.5, kernel stretched by the downscale factor, weights
renormalised at the borders; crop_and_resize's corner-aligned box sampling), so the result matches the TF
pipeline up to JPEG decoder differences (see `jpeg_roundtrip`) and float rounding.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

IMAGE_SIZE = 224  # every model's camera view (OpenVLA, OFT, pi0): 16 x 16 patches of 14 px
CROP_AREA = 0.9
JPEG_QUALITY = 95  # tf.image.encode_jpeg's default


def jpeg_roundtrip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode (4:2:0 chroma, as tf.image.encode_jpeg) and decode with libjpeg's fast integer DCT.

    TensorFlow decodes with the fast integer DCT (INTEGER_FAST); Pillow's default accurate DCT differs from
    it by about 1 grey level on average, its draft decoder (fast DCT, plain chroma upsampling) by about 0.14.
    `decoderconfig = (scale, draft)` is what `Image.draft` sets; scale 1 keeps the full size.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = Image.open(buffer)
    decoded.decoderconfig = (1, 1)
    return np.asarray(decoded.convert("RGB"))


def lanczos3(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    safe = np.where(x < 1e-3, 1.0, x)
    value = 3.0 * np.sin(np.pi * safe) * np.sin(np.pi * safe / 3.0) / (np.pi**2 * safe**2)
    return np.where(x < 1e-3, 1.0, np.where(x > 3.0, 0.0, value))


def lanczos_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] antialiased Lanczos-3 resampling matrix, rows summing to 1."""
    inv_scale = in_size / out_size
    stretch = max(inv_scale, 1.0)  # antialias: widen the kernel when downscaling
    centers = (np.arange(out_size) + 0.5) * inv_scale  # output pixel centres in input coordinates
    sources = np.arange(in_size) + 0.5
    weights = lanczos3((sources[None, :] - centers[:, None]) / stretch)
    return weights / weights.sum(axis=1, keepdims=True)


def separable(image: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Apply [out_h, h] and [out_w, w] resampling matrices to an HxWxC image."""
    rows = np.tensordot(wy, image, axes=(1, 0))  # [out_h, w, c]
    return np.tensordot(wx, rows, axes=(1, 1)).transpose(1, 0, 2)  # [out_h, out_w, c]


def resize_lanczos(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 HxWx3 -> uint8 size x size x 3, like tf.image.resize(lanczos3, antialias=True) + round + clip."""
    h, w = image.shape[:2]
    wy, wx = lanczos_weights(h, size), lanczos_weights(w, size)
    out = separable(image.astype(np.float64), wy, wx)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def crop_weights(in_size: int, out_size: int, start: float, end: float) -> np.ndarray:
    """[out, in] bilinear sampling of the normalised box [start, end], corner-aligned as crop_and_resize."""
    coords = start * (in_size - 1) + np.arange(out_size) * (end - start) * (in_size - 1) / (out_size - 1)
    low = np.floor(coords).astype(int)
    frac = coords - low
    high = np.minimum(low + 1, in_size - 1)
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def center_crop_resize(image: np.ndarray, area: float = CROP_AREA) -> np.ndarray:
    """Centre crop covering `area` of the image (side sqrt(area)), resized back to the input size (bilinear).

    Like the official `crop_and_resize` on the float image in [0, 1], converted back to uint8 the way
    tf.image.convert_image_dtype does (scale by 255.5, truncate, saturate).
    """
    h, w = image.shape[:2]
    side = math.sqrt(area)
    start, end = (1.0 - side) / 2.0, (1.0 + side) / 2.0
    wy, wx = crop_weights(h, h, start, end), crop_weights(w, w, start, end)
    out = separable(image.astype(np.float64) / 255.0, wy, wx)
    return np.minimum(np.floor(np.clip(out, 0.0, 1.0) * 255.5), 255).astype(np.uint8)


def model_image(upright: np.ndarray, center_crop: bool = True) -> np.ndarray:
    """An upright camera image (HxWx3 uint8) -> the model's 224x224x3 uint8 input: JPEG round trip, Lanczos
    resize, centre crop, as the official evaluation does after turning the frame upright."""
    image = resize_lanczos(jpeg_roundtrip(upright), IMAGE_SIZE)
    return center_crop_resize(image) if center_crop else image
