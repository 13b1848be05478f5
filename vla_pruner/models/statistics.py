"""Dataset statistics as OpenVLA checkpoints store them (`q01`, `q99`, optional `mask` per dimension): one reader
for the action un-normalisation and the proprio normalisation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QuantileBounds:
    """The 1% and 99% quantiles per dimension and which dimensions are normalised (default: all)."""

    low: np.ndarray
    high: np.ndarray
    mask: np.ndarray

    @classmethod
    def of(cls, stats: dict[str, Any]) -> "QuantileBounds":
        low, high = np.asarray(stats["q01"], dtype=np.float64), np.asarray(stats["q99"], dtype=np.float64)
        return cls(low, high, np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool))
