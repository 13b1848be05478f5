"""Action tokens <-> continuous actions, as OpenVLA discretises them.

The last 256 ids of the text vocabulary are action bins counted down from `text_vocab_size`; a bin maps to
the centre of one of 255 uniform intervals on [-1, 1]; dataset statistics (q01/q99) un-normalise it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vla_pruner.models.statistics import QuantileBounds


class ActionTokenizer:
    def __init__(self, text_vocab_size: int = 32000, n_bins: int = 256):
        self.text_vocab_size = text_vocab_size
        edges = np.linspace(-1.0, 1.0, n_bins)
        self.bin_centers = (edges[:-1] + edges[1:]) / 2.0

    @property
    def token_ids(self) -> range:
        """Token ids that decode to a bin (the lowest one clips into the last bin)."""
        return range(self.text_vocab_size - len(self.bin_centers) - 1, self.text_vocab_size)

    def normalized(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids -> actions in [-1, 1]."""
        idx = np.clip(self.text_vocab_size - np.asarray(token_ids) - 1, 0, len(self.bin_centers) - 1)
        return self.bin_centers[idx]


def select_action_stats(norm_stats: dict[str, Any], key: str | None) -> dict[str, Any]:
    """`norm_stats[key]["action"]`, trying `{key}_no_noops` next; key None is allowed for one dataset only."""
    if key is None:
        if len(norm_stats) != 1:
            raise ValueError(f"the checkpoint has statistics for several datasets; pick one of {sorted(norm_stats)}")
        key = next(iter(norm_stats))
    for candidate in (key, f"{key}_no_noops"):
        if candidate in norm_stats:
            return norm_stats[candidate]["action"]
    raise ValueError(f"no action statistics for {key!r} in the checkpoint; it has {sorted(norm_stats)}")


def unnormalize(normalized: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """[-1, 1] -> dataset units on the dimensions where `mask` is true (q01..q99); others pass through."""
    b = QuantileBounds.of(stats)
    return np.where(b.mask, 0.5 * (normalized + 1.0) * (b.high - b.low) + b.low, normalized)


def normalize(actions: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """Dataset units -> [-1, 1] (clipped, as OpenVLA's training data are): the inverse of `unnormalize`."""
    b = QuantileBounds.of(stats)
    scaled = np.clip(2.0 * (np.asarray(actions, dtype=np.float64) - b.low) / (b.high - b.low) - 1.0, -1.0, 1.0)
    return np.where(b.mask, scaled, actions)
