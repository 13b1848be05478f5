"""OpenVLA-OFT's proprioception: the 8-dim robot state, its normalisation and its projection to one LLM token.

State = [eef position (3), axis-angle of the eef quaternion (3), gripper joint positions (2)]. It is
normalised with the dataset's q01/q99 bounds to [-1, 1] and clipped, as the official evaluation does, then
`ProprioProjector` (names as the official `proprio_projector--N_checkpoint.pt`: fc1, fc2) maps it to the
token that follows the visual tokens.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .statistics import QuantileBounds

PROPRIO_DIM = 8


class ProprioProjector(nn.Module):
    """Linear(8 -> d), GELU, Linear(d -> d)."""

    def __init__(self, llm_dim: int, proprio_dim: int = PROPRIO_DIM):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion (robosuite's order) -> axis * angle, angle = 2*acos(w) in [0, 2*pi]
    (robosuite's `quat2axisangle`: w clipped to [-1, 1], zero rotation -> zeros)."""
    quat = np.asarray(quat, dtype=np.float64)
    w = min(max(float(quat[3]), -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(w) / den


def robot_state(eef_pos: np.ndarray, eef_quat: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The 8-dim state the OFT checkpoints were trained on."""
    return np.concatenate([np.asarray(eef_pos, dtype=np.float64), quat_to_axis_angle(eef_quat),
                           np.asarray(gripper_qpos, dtype=np.float64)])


def normalize_proprio(state: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """q01/q99 bounds -> [-1, 1], clipped: `2*(x-q01)/(q99-q01+1e-8)-1` where `mask` (default all)."""
    b = QuantileBounds.of(stats)
    scaled = 2.0 * (np.asarray(state, dtype=np.float64) - b.low) / (b.high - b.low + 1e-8) - 1.0
    return np.clip(np.where(b.mask, scaled, state), -1.0, 1.0)
