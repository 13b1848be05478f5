"""LIBERO's conventions, which models trained on its datasets follow and the harness converts to (NumPy only: the
simulator workers import it without torch).

Actions: 7 dims, the arm's six delta dims and the gripper, -1 open / +1 close. OpenVLA's datasets (and so the
OpenVLA and OpenVLA-OFT checkpoints) write the gripper as 1 open / 0 close: `actions_to_env` turns a model's
actions of that convention into LIBERO's as the official evaluation does, and `actions_from_env` back.
"""
from __future__ import annotations

import numpy as np

from evaluate.envs.base import ENV_ACTIONS, OPEN1_CLOSE0_GRIPPER


def gripper_from_env(action: np.ndarray) -> np.ndarray:
    """LIBERO gripper (-1 open, +1 close) -> the model's (1 open, 0 close): the inverse of `gripper_to_env`."""
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = (1.0 - np.sign(out[..., -1])) / 2.0
    return out


def gripper_to_env(action: np.ndarray) -> np.ndarray:
    """Model gripper (0 close .. 1 open) -> LIBERO gripper (-1 open, +1 close), as the official eval does."""
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


_TO_ENV = {ENV_ACTIONS: lambda actions: actions, OPEN1_CLOSE0_GRIPPER: gripper_to_env}
_FROM_ENV = {ENV_ACTIONS: lambda actions: actions, OPEN1_CLOSE0_GRIPPER: gripper_from_env}


def actions_to_env(actions: np.ndarray, convention: str) -> np.ndarray:
    if convention not in _TO_ENV:
        raise ValueError(f"LIBERO cannot convert actions of convention {convention!r}; known: {', '.join(_TO_ENV)}")
    return _TO_ENV[convention](actions)


def actions_from_env(actions: np.ndarray, convention: str) -> np.ndarray:
    if convention not in _FROM_ENV:
        raise ValueError(f"LIBERO cannot convert actions to convention {convention!r}; known: {', '.join(_FROM_ENV)}")
    return _FROM_ENV[convention](actions)
