"""LIBERO's conventions, which the models trained on its datasets follow and the harness converts to (NumPy only:
the simulator workers import it without torch). The model library knows none of them.

- Frames: LIBERO renders upside down; `upright` turns a camera frame (the official evaluation's first step).
- Robot state: the 8-dim vector of LIBERO's datasets (`robot_state`), which the OpenVLA-OFT and pi0 checkpoints
  were fine-tuned on.
- Actions: 7 dims, the arm's six delta dims and the gripper, -1 open / +1 close. OpenVLA's datasets (and so the
  OpenVLA and OpenVLA-OFT checkpoints) write the gripper as 1 open / 0 close: `actions_to_env` turns a model's
  actions of that convention into LIBERO's as the official evaluation does, and `actions_from_env` back.
- Statistics: the four LIBERO fine-tuning datasets' action statistics, with which the project's seeded tiny models
  are built (`tiny_openvla_stats`, `tiny_oft_stats`, `tiny_pi0_stats`) so that their actions un-normalise per suite;
  a real checkpoint always uses its own. Their vocabulary is LIBERO's instructions (evaluate/envs/vocabulary.py).
"""
from __future__ import annotations

import math
from typing import Any

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


# ---------------------------------------------------------------------------------------------- frames


def upright(frame: np.ndarray) -> np.ndarray:
    """LIBERO renders upside down: flip both axes."""
    return np.ascontiguousarray(frame[::-1, ::-1])


def libero_image(frame: np.ndarray, center_crop: bool = True) -> np.ndarray:
    """A LIBERO camera frame as rendered (HxWx3 uint8, upside down) -> OpenVLA's 224x224x3 uint8 input image."""
    from vla_pruner.models.preprocess import model_image

    return model_image(upright(frame), center_crop)


# ---------------------------------------------------------------------------------------------- robot state

PROPRIO_DIM = 8  # [eef position (3), axis-angle of the eef quaternion (3), gripper joint positions (2)]


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion (robosuite's order) -> axis * angle, angle = 2*acos(w) in [0, 2*pi]
    (robosuite's `quat2axisangle`: w clipped to [-1, 1], zero rotation -> zeros)."""
    quat = np.asarray(quat, dtype=np.float64)
    w = min(max(float(quat[3]), -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(w) / den


def robot_state(eef_pos: np.ndarray, orientation: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The 8-dim state the OFT checkpoints were trained on: eef position, axis-angle of the eef orientation (an
    (x, y, z, w) quaternion), gripper joint positions."""
    return np.concatenate([np.asarray(eef_pos, dtype=np.float64), quat_to_axis_angle(orientation),
                           np.asarray(gripper_qpos, dtype=np.float64)])


# ---------------------------------------------------------------------------------------------- statistics

# Action statistics of the four LIBERO fine-tuning datasets (q01/q99/mask), as OpenVLA's LIBERO checkpoints store
# them in config.json `norm_stats`.
LIBERO_ACTION_STATS: dict[str, dict[str, list]] = {
    "libero_spatial": {
        "q01": [-0.7454732114076613, -0.6616071462631226, -0.9375, -0.1071428582072258, -0.20678570866584778, -0.1842857152223587, 0.0],
        "q99": [0.9375, 0.8758928775787354, 0.9321428537368774, 0.1039285734295845, 0.17678570747375488, 0.14571428298950195, 1.0],
        "mask": [True, True, True, True, True, True, False],
    },
    "libero_object": {
        "q01": [-0.5383928418159485, -0.8758928775787354, -0.9375, -0.06964285671710968, -0.11678571254014969, -0.15964286029338837, 0.0],
        "q99": [0.8464285731315613, 0.84375, 0.9375, 0.08142857253551483, 0.14892856776714325, 0.0867857113480568, 1.0],
        "mask": [True, True, True, True, True, True, False],
    },
    "libero_goal": {
        "q01": [-0.8785714507102966, -0.7553571462631226, -0.9375, -0.1510714292526245, -0.1639285683631897, -0.13777500048279764, 0.0],
        "q99": [0.9375, 0.9107142686843872, 0.9375, 0.20357142388820648, 0.26357144117355347, 0.375, 1.0],
        "mask": [True, True, True, True, True, True, False],
    },
    "libero_10": {
        "q01": [-0.6348214149475098, -0.7741071581840515, -0.7633928656578064, -0.09749999642372131, -0.14819999992847435, -0.2742857038974762, 0.0],
        "q99": [0.7714285850524902, 0.8464285731315613, 0.9375, 0.13928571343421936, 0.15964286029338837, 0.3246428668498993, 1.0],
        "mask": [True, True, True, True, True, True, False],
    },
}

# Proprio bounds for the tiny model (the real q01/q99 come with real checkpoints): a box around every LIBERO
# scene the Panda reaches (eef x, y, z in metres; LIBERO tables sit at z of about 0.2 to 1.2), axis-angle
# components within +-pi (gripper-down poses are near (pi, 0, 0)), finger joints within the Panda's 0.04 m.
TINY_PROPRIO_STATS = {
    "q01": [-0.5, -0.4, 0.0, -3.1416, -3.1416, -3.1416, 0.0, -0.04],
    "q99": [0.3, 0.4, 1.4, 3.1416, 3.1416, 3.1416, 0.04, 0.0],
}
# LIBERO (physical-intelligence/libero) mean/std, as the LeRobot fixture's normalizer holds them: the tiny pi0's
PI0_STATS = {
    "observation.state.mean": [-0.194314, 0.00511244, 0.930535, 3.09577, -0.0244051, -0.138764, 0.0417295, 0.0282875],
    "observation.state.std": [0.300779, 0.287953, 0.398984, 0.385689, 0.360541, 0.256953, 0.347075, 0.41953],
    "action.mean": [-0.134421, -0.0457616, -0.190122, -0.128954, -0.184174, -0.0235091, -0.126745],
    "action.std": [0.477126, 0.465675, 0.431307, 0.198324, 0.396131, 0.44515, 0.461331],
}


def tiny_openvla_stats() -> dict[str, Any]:
    """The tiny OpenVLA's `norm_stats`: each suite's action statistics under the suite's name."""
    return {suite: {"action": stats} for suite, stats in LIBERO_ACTION_STATS.items()}


def tiny_oft_stats() -> dict[str, Any]:
    """The tiny OpenVLA-OFT's `norm_stats`: `{suite}_no_noops` action statistics and the proprio bounds."""
    return {f"{suite}_no_noops": {"action": stats, "proprio": TINY_PROPRIO_STATS}
            for suite, stats in LIBERO_ACTION_STATS.items()}


def tiny_pi0_stats() -> dict[str, list[float]]:
    """The tiny pi0's normalizer (LeRobot's names): LIBERO's state and action mean and std."""
    return PI0_STATS
