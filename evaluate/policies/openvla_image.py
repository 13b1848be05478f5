"""The 224x224 image an OpenVLA-family model saw in training, from an upright camera image (the benchmark seam's
convention, evaluate/envs/base.py).

The official LIBERO evaluation turns the frame 180 degrees, round-trips it through JPEG, resizes it (Lanczos) and
takes a centre crop. The turn is the environment's business (it makes the image upright); the rest happens here,
in the same order, with vla_pruner's TF-free steps, so that on LIBERO the result is bit-identical to
`vla_pruner.models.preprocess.libero_image` of the raw frame (tests/test_observation.py).
"""
from __future__ import annotations

import numpy as np

from vla_pruner.models.preprocess import IMAGE_SIZE, center_crop_resize, jpeg_roundtrip, resize_lanczos


def model_image(upright: np.ndarray) -> np.ndarray:
    """HxWx3 uint8, upright -> the model's 224x224x3 uint8 input."""
    return center_crop_resize(resize_lanczos(jpeg_roundtrip(upright), IMAGE_SIZE))
