"""pi0's observation -> model inputs as openpi's LIBERO client prepares them: an upright 256x256 frame (openpi
rotates LIBERO's render 180 degrees; the harness's observations already are upright) resized with padding to
224 (PIL bilinear, black bars centred), then uint8 -> [-1, 1]; the 8-dim state normalised with mean/std."""
from __future__ import annotations

import numpy as np
from PIL import Image

from vla_pruner.models.preprocess import IMAGE_SIZE


def resize_with_pad(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3 uint8 without distortion (openpi `image_tools.resize_with_pad`)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), resample=Image.BILINEAR))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - rh) // 2, (size - rw) // 2
    out[top:top + rh, left:left + rw] = resized
    return out


def to_pixels(image: np.ndarray) -> np.ndarray:
    """224x224x3 uint8 -> [3, 224, 224] float32 in [-1, 1]."""
    return (image.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)
