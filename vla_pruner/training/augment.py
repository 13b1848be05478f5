"""OFT's training augmentation: a random square crop of 90% of the image area, resized back to 224.

Evaluation takes the centre crop of the same area (vla_pruner.models.preprocess.center_crop_resize); the random
crop here samples the same way (crop_and_resize's corner-aligned bilinear box, then TF's float -> uint8 rule), only
the box moves, so the centred box reproduces the evaluation view (tests/test_training.py)."""
from __future__ import annotations

import math

import numpy as np
import torch

from vla_pruner.models.preprocess import CROP_AREA, crop_weights


def crop_boxes(n: int, rng: np.random.Generator, area: float = CROP_AREA) -> np.ndarray:
    """[n, 2] (row, column) starts of random boxes of side sqrt(area), in normalised coordinates."""
    side = math.sqrt(area)
    return rng.uniform(0.0, 1.0 - side, size=(n, 2))


def crop_resize(images: np.ndarray, starts: np.ndarray, area: float = CROP_AREA) -> np.ndarray:
    """uint8 [n, H, W, 3] -> uint8 [n, H, W, 3]: box n starting at starts[n] (normalised), side sqrt(area), resized
    back to H x W."""
    n, h, w, _ = images.shape
    side = math.sqrt(area)
    wy = torch.from_numpy(np.stack([crop_weights(h, h, s, s + side) for s in starts[:, 0]]))
    wx = torch.from_numpy(np.stack([crop_weights(w, w, s, s + side) for s in starts[:, 1]]))
    x = torch.from_numpy(images).double().div_(255.0).permute(0, 3, 1, 2)  # [n, 3, H, W]
    out = wy[:, None] @ x @ wx[:, None].transpose(-1, -2)
    out = torch.floor(out.clamp_(0.0, 1.0) * 255.5).clamp_(max=255)
    return out.permute(0, 2, 3, 1).to(torch.uint8).numpy()
