"""Greedy max-min diversity selection (VLA-Pruner's min-redundancy filter; DivPrune's whole rule).

The pairwise cosine distances come from the features' Gram matrix on their device (the first pick needs every
row's nearest neighbour, so every pair is needed; symmetry saves products, see `symmetric_gram`: on a CPU
NumPy's product of a matrix with its own transpose is one BLAS syrk call, which computes one triangle), scaled
by the inverse norms read off its diagonal, so no normalised n x d copy is made; the greedy then needs only one
O(n) update per pick (a running minimum distance to the chosen set). On a CPU everything after the product runs
in NumPy, because the per-call overhead of torch ops on a few hundred floats would dominate. Finiteness is
checked on the n x n distances, not on the n x d features: a non-finite feature makes its row of distances NaN,
and scanning the features cost as much as the matrix product at d = 4096. (Costs: scripts/bench_selection.py.)

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


DTYPES = (torch.float32, torch.bfloat16)


def cosine_distances(features: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[n, n] matrix of 1 - cos(f_i, f_j) as float32, computed in `dtype` (see the module docstring). Exactly
    symmetric. Never part of an autograd graph: every path ends in NumPy or in place."""
    features = features.detach()
    if dtype == torch.float32 and features.device.type == "cpu":
        return torch.from_numpy(_scaled_to_distances(symmetric_gram(features.float()).numpy()))
    if dtype == torch.float32:
        gram = symmetric_gram(features.float())
        inverse_norm = gram.diagonal().sqrt().clamp_min(1e-12).reciprocal()
        return gram.mul_(inverse_norm[:, None] * inverse_norm[None]).neg_().add_(1.0)  # in place: 1 - cos
    x = _rounded(features)
    norm = _rounded(x.norm(dim=1, keepdim=True))
    unit = _rounded(x / norm.clamp_min(1e-12))
    return _rounded(1.0 - _rounded(symmetric_gram(unit)))


def _scaled_to_distances(gram: np.ndarray) -> np.ndarray:
    """1 - cos from a float32 Gram matrix, in place, in NumPy: the same steps as the torch branch above (same
    rounding), at a microsecond per step where a torch op costs several."""
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite features: refused by the caller, by row
        inverse_norm = np.reciprocal(np.maximum(np.sqrt(gram.diagonal()), np.float32(1e-12)))
        gram *= inverse_norm[:, None] * inverse_norm[None]
        return np.subtract(np.float32(1.0), gram, out=gram)


def symmetric_gram(rows: torch.Tensor) -> torch.Tensor:
    """rows @ rows.T for float32 rows [n, d], exactly symmetric: on a CPU NumPy's product, on other devices the
    upper block triangle. Fixed per device, never chosen by timing, so machine load cannot change the last bits
    of near-tied distances and with them a selection."""
    return numpy_syrk(rows) if rows.device.type == "cpu" else block_triangle(rows)


def numpy_syrk(rows: torch.Tensor) -> torch.Tensor:
    """NumPy computes a matrix times its own transpose as one BLAS syrk call: half the multiply-adds, one
    triangle mirrored. (On one 2-core Xeon MKL's full product beat OpenBLAS's syrk; on another Xeon and on an
    EPYC the syrk won: docs/benchmarks.md.)"""
    array = rows.detach().contiguous().numpy()
    return torch.from_numpy(array @ array.T)


def block_triangle(rows: torch.Tensor) -> torch.Tensor:
    """The first half of the rows against all, the second half against itself, mirrored: 3/4 of the
    multiply-adds in two GEMMs, for devices whose BLAS has no syrk behind torch."""
    n, half = rows.shape[0], rows.shape[0] // 2
    top = rows[:half] @ rows.T
    gram = torch.empty(n, n, dtype=top.dtype, device=top.device)
    gram[:half] = top
    gram[half:, :half] = top[:, half:].T
    gram[half:, half:] = rows[half:] @ rows[half:].T
    return gram


def _rounded(values: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to the nearest bfloat16 (exactly representable in float32 again)."""
    return values.to(torch.bfloat16).float()


def select_diverse(features: torch.Tensor, k: int, dtype: torch.dtype = torch.float32,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of k rows of `features` [n, d], chosen by greedy max-min cosine distance among all rows or, if
    given, among `rows` (long indices into `features`; the result is then a subset of them).

    Start from the row whose nearest other row is farthest; then repeatedly add the row whose minimum
    distance to the chosen rows is largest. Ties go to the lowest position (in `rows`, if given). Returned in
    pick order, on `features`' device; k >= the number of rows returns all of them in order. `dtype` (float32 or
    bfloat16) is the precision of the distances. Raises ValueError on non-finite features when the greedy runs
    (a NaN distance would make it pick one row several times), a k that is negative or not an integer,
    `features` that is not 2-D, another dtype, or `rows` that are not distinct integer indices of `features`.

    """
    k = _check_inputs(features, k, dtype)
    if rows is not None:
        rows = _check_rows(rows, features.shape[0]).to(features.device)
        return rows[_greedy(features.index_select(0, rows), k, dtype)]
    return _greedy(features, k, dtype)


def _greedy(features: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    n = features.shape[0]
    if k >= n:
        return torch.arange(n, device=features.device)
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=features.device)
    distances = cosine_distances(features, dtype).cpu().numpy()
    if not np.isfinite(distances).all():
        raise _non_finite(features, dtype)
    return torch.tensor(greedy_max_min(distances, k), dtype=torch.long, device=features.device)


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
    return k


def _check_rows(rows, n: int) -> torch.Tensor:
    """`rows` as given, after the checks that keep it from failing deep in torch or picking a row twice."""
    if not isinstance(rows, torch.Tensor):
        raise TypeError(f"select_diverse: rows must be a torch.Tensor of indices, got {type(rows).__name__}")
    if rows.dtype.is_floating_point or rows.dtype.is_complex or rows.dtype == torch.bool:
        raise ValueError(f"select_diverse: rows must be an integer tensor, got {rows.dtype}")
    if rows.dim() != 1:
        raise ValueError(f"select_diverse: rows must be 1-D, got shape {tuple(rows.shape)}")
    outside = rows[(rows < 0) | (rows >= n)]
    if len(outside):
        raise ValueError(f"select_diverse: rows must be indices in 0..{n - 1} of features' {n} rows, "
                         f"got {outside[0].item()}")
    values, counts = rows.unique(return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"select_diverse: rows must not repeat, got {values[counts > 1][0].item()} more than once")
    return rows.long()


def _non_finite(features: torch.Tensor, dtype: torch.dtype) -> ValueError:
    """The error for distances that are not all finite, naming the feature rows at fault."""
    bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten().tolist()
    if not bad:  # finite float32 features beyond bfloat16's range
        return ValueError(f"select_diverse: cosine distances in {dtype} are not finite: features too large "
                          "(squared norms overflow)")
    return ValueError(f"select_diverse: features must be finite; rows {bad[:10]}{' ...' if len(bad) > 10 else ''} "
                      "hold NaN or inf")


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
