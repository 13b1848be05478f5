"""OpenVLA-OFT's proprioception: the normalisation of the 8-dim robot state (the benchmark's, e.g. LIBERO's
evaluate.envs.libero_conventions.robot_state) and its projection to one LLM token.

The state is normalised with the dataset's q01/q99 bounds to [-1, 1] and clipped, as the official evaluation
does, then `ProprioProjector` (names as the official `proprio_projector--N_checkpoint.pt`: fc1, fc2) maps it to
the token that follows the visual tokens.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vla_pruner.models.statistics import QuantileBounds

PROPRIO_DIM = 8  # the robot state the checkpoints were fine-tuned on (eef position, axis-angle, gripper joints)


class ProprioProjector(nn.Module):
    """Linear(8 -> d), GELU, Linear(d -> d)."""

    def __init__(self, llm_dim: int, proprio_dim: int = PROPRIO_DIM):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


def normalize_proprio(state: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """q01/q99 bounds -> [-1, 1], clipped: `2*(x-q01)/(q99-q01+1e-8)-1` where `mask` (default all)."""
    b = QuantileBounds.of(stats)
    scaled = 2.0 * (np.asarray(state, dtype=np.float64) - b.low) / (b.high - b.low + 1e-8) - 1.0
    return np.clip(np.where(b.mask, scaled, state), -1.0, 1.0)
