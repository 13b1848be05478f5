"""Dataset statistics in the layout OpenVLA checkpoints store (`dataset_statistics.json`, config.json
`norm_stats`): per dimension mean, std, min, max, q01, q99 and the normalisation mask."""
from __future__ import annotations

from typing import Any

import numpy as np

# the gripper (last action dimension) is not normalised: the model outputs it in 0 (close) .. 1 (open), as OpenVLA's
# LIBERO statistics say with mask False
ACTION_MASK = (True,) * 6 + (False,)


def dimension_statistics(values: np.ndarray, mask: tuple[bool, ...] | None = None) -> dict[str, Any]:
    """[N, D] samples -> the per-dimension statistics OpenVLA stores."""
    values = np.asarray(values, dtype=np.float64)
    stats = {
        "mean": values.mean(0), "std": values.std(0), "max": values.max(0), "min": values.min(0),
        "q01": np.quantile(values, 0.01, axis=0), "q99": np.quantile(values, 0.99, axis=0),
    }
    out: dict[str, Any] = {k: v.tolist() for k, v in stats.items()}
    out["mask"] = list(mask) if mask is not None else [True] * values.shape[1]
    return out


def dataset_statistics(actions: np.ndarray, proprio: np.ndarray, trajectories: int) -> dict[str, Any]:
    """One dataset's entry: `action` (model convention, gripper 0..1 unmasked), `proprio`, counts."""
    return {"action": dimension_statistics(actions, ACTION_MASK), "proprio": dimension_statistics(proprio),
            "num_transitions": int(len(actions)), "num_trajectories": int(trajectories)}
