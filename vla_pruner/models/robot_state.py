"""The 8-dim robot state the OpenVLA-OFT checkpoints were trained on, from a LIBERO observation.

State = [eef position (3), axis-angle of the eef quaternion (3), gripper joint positions (2)]. NumPy only: the
simulator side (evaluate/envs/libero.py, its worker processes) builds it without importing torch.
"""
from __future__ import annotations

import math

import numpy as np

PROPRIO_DIM = 8


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
