"""Greedy max-min diversity selection (VLA-Pruner's min-redundancy filter; DivPrune's whole rule).

The pairwise cosine distances come from one matrix product; the greedy then needs only one O(n) update per
pick (a running minimum distance to the chosen set), done in NumPy because per-call overhead of torch ops on
a few hundred floats would dominate (measured in scripts/bench_selection.py).

`dtype=torch.bfloat16` reproduces the public VLA-Pruner code, which runs this filter on the model's bf16
embeddings: every quantity it stores in bf16 (the features, their norms, the unit vectors, the cosine
similarities and the distances) is rounded to bf16 here, with float32 arithmetic in between, as bf16 kernels
compute. That makes the distances coarse (steps of 2^-8 near 1), so ties among candidates are common; they still
go to the lowest index.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F


DTYPES = (torch.float32, torch.bfloat16)


def cosine_distances(features: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[n, n] matrix of 1 - cos(f_i, f_j) as float32, computed in `dtype` (see the module docstring)."""
    if dtype == torch.float32:
        unit = F.normalize(features.float(), dim=1)
        return 1.0 - unit @ unit.T
    x = _rounded(features)
    norm = _rounded(x.norm(dim=1, keepdim=True))
    unit = _rounded(x / norm.clamp_min(1e-12))
    return _rounded(1.0 - _rounded(unit @ unit.T))


def _rounded(values: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to the nearest bfloat16 (exactly representable in float32 again)."""
    return values.to(torch.bfloat16).float()


def select_diverse(features: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Indices (into the rows of `features` [n, d]) of k rows chosen by greedy max-min cosine distance.

    Start from the row whose nearest other row is farthest; then repeatedly add the row whose minimum
    distance to the chosen rows is largest. Ties go to the lowest index. Returned in pick order, on
    `features`' device; k >= n returns all rows in order. `dtype` (float32 or bfloat16) is the precision of
    the distances. Raises ValueError on non-finite features (a NaN distance would make the greedy pick one row
    several times), a k that is negative or not an integer, `features` that is not 2-D, or another dtype.
    """
    k = _check_inputs(features, k, dtype)
    n = features.shape[0]
    if k >= n:
        return torch.arange(n, device=features.device)
    picks = greedy_max_min(cosine_distances(features, dtype).cpu().numpy(), k) if k > 0 else []
    return torch.tensor(picks, dtype=torch.long, device=features.device)


def _check_inputs(features: torch.Tensor, k, dtype: torch.dtype) -> int:
    """k as an int, after the checks that keep a bad call from returning a wrong selection quietly."""
    if dtype not in DTYPES:
        raise ValueError(f"select_diverse: dtype must be torch.float32 or torch.bfloat16, got {dtype!r}")
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"select_diverse: features must be a torch.Tensor [n, d], got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"select_diverse: features must be 2-D [n, d], got shape {tuple(features.shape)}")
    if isinstance(k, bool):
        raise ValueError(f"select_diverse: k must be a non-negative integer, got bool {k}")
    try:
        k = operator.index(k)  # int, numpy integer or a 0-d integer tensor; not 2.5 nor 2.0
    except TypeError:
        raise ValueError(f"select_diverse: k must be a non-negative integer, got {k!r}") from None
    if k < 0:
        raise ValueError(f"select_diverse: k must be a non-negative integer, got {k}")
    if not bool(torch.isfinite(features).all()):
        bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"select_diverse: features must be finite; rows {bad[:10]}{' ...' if len(bad) > 10 else ''} "
                         "hold NaN or inf")
    return k


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
