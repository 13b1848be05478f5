"""Greedy max-min diversity selection (VLA-Pruner's min-redundancy filter; DivPrune's whole rule).

The pairwise cosine distances come from one matrix product; the greedy then needs only one O(n) update per
pick (a running minimum distance to the chosen set), done in NumPy because per-call overhead of torch ops on
a few hundred floats would dominate (measured in scripts/bench_selection.py).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_distances(features: torch.Tensor) -> torch.Tensor:
    """[n, n] matrix of 1 - cos(f_i, f_j), float32."""
    unit = F.normalize(features.float(), dim=1)
    return 1.0 - unit @ unit.T


def select_diverse(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (into the rows of `features` [n, d]) of k rows chosen by greedy max-min cosine distance.

    Start from the row whose nearest other row is farthest; then repeatedly add the row whose minimum
    distance to the chosen rows is largest. Ties go to the lowest index. Returned in pick order, on
    `features`' device; k >= n returns all rows in order.
    """
    n = features.shape[0]
    if k >= n:
        return torch.arange(n, device=features.device)
    picks = greedy_max_min(cosine_distances(features).cpu().numpy(), k) if k > 0 else []
    return torch.tensor(picks, dtype=torch.long, device=features.device)


def greedy_max_min(dist: np.ndarray, k: int) -> list[int]:
    """The greedy on a symmetric [n, n] distance matrix (modified in place), 0 < k < n."""
    np.fill_diagonal(dist, np.inf)
    first = int(dist.min(axis=1).argmax())
    # a chosen row's distance to itself is -inf, so the running minimum excludes it from later picks
    np.fill_diagonal(dist, -np.inf)
    min_dist = dist[first].copy()
    picks = [first]
    for _ in range(k - 1):
        j = int(min_dist.argmax())
        picks.append(j)
        np.minimum(min_dist, dist[j], out=min_dist)
    return picks
