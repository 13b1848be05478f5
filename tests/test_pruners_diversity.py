"""select_diverse against a plain pairwise reference on small inputs."""
import itertools
import math

import pytest
import torch

from vla_pruner import diversity
from vla_pruner.diversity import select_diverse, symmetric_gram


@pytest.fixture(params=["numpy_syrk", "block_triangle"])
def cpu_product(request, monkeypatch):
    """Both products of the Gram matrix run on the CPU: NumPy's syrk (a CPU's) and the block triangle (other
    devices'), so the device path's arithmetic is tested on a machine without one."""
    monkeypatch.setattr(diversity, "numpy_syrk", getattr(diversity, request.param))
    return request.param


def reference_max_min(features: torch.Tensor, k: int) -> list[int]:
    """The rule as written, one pair at a time (the reference implementation's shape)."""

    def d(i, j):
        return 1.0 - torch.nn.functional.cosine_similarity(features[i], features[j], dim=0).item()

    return reference_greedy(len(features), k, d)


def reference_greedy(n: int, k: int, d) -> list[int]:
    """Greedy max-min over a pair distance d(i, j), ties to the lowest index."""
    nearest = [min(d(i, j) for j in range(n) if j != i) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(d(i, c) for c in chosen), -i)))
    return chosen


@pytest.mark.parametrize("seed, n, k", [(s, n, k) for s in range(5) for n, k in ((6, 3), (12, 5), (20, 19))])
def test_matches_pairwise_reference(seed, n, k, cpu_product):
    features = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert select_diverse(features, k).tolist() == reference_max_min(features, k)


@pytest.mark.parametrize("n", [1, 2, 7, 115, 256])
def test_both_products_are_exactly_symmetric_gram_matrices(n, cpu_product):
    rows = torch.randn(n, 4096, generator=torch.Generator().manual_seed(n))
    gram = symmetric_gram(rows)
    assert torch.equal(gram, gram.T)
    assert torch.allclose(gram.double(), rows.double() @ rows.double().T, rtol=1e-5, atol=1e-3)


def test_takes_one_token_per_cluster_first():
    """Three tight clusters of three: the first three picks cover all clusters."""
    noise = 0.01 * torch.rand(9, 3, generator=torch.Generator().manual_seed(0))
    features = torch.eye(3).repeat_interleave(3, dim=0) + noise
    picks = select_diverse(features, 3).tolist()
    assert sorted(p // 3 for p in picks) == [0, 1, 2]


def test_k_at_least_n_returns_all_rows_and_k_zero_none():
    features = torch.randn(5, 4)
    assert select_diverse(features, 5).tolist() == [0, 1, 2, 3, 4]
    assert select_diverse(features, 9).tolist() == [0, 1, 2, 3, 4]
    assert select_diverse(features, 0).tolist() == []


def test_distinct_even_with_duplicate_rows_and_ties_go_low():
    features = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    picks = select_diverse(features, 4).tolist()
    assert len(set(picks)) == 4
    assert picks == [0, 3, 1, 2]


def test_deterministic_and_on_input_device():
    features = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    first, second = select_diverse(features, 16), select_diverse(features.clone(), 16)
    assert torch.equal(first, second) and first.device == features.device and first.dtype == torch.long
    assert not any(a == b for a, b in itertools.combinations(first.tolist(), 2))


def test_public_at_the_package_root():
    import vla_pruner
    from vla_pruner.diversity import select_diverse as direct

    assert vla_pruner.select_diverse is direct
    assert vla_pruner.select_diverse(torch.eye(3), 5).tolist() == [0, 1, 2]  # k >= n: all rows


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_features_are_refused_naming_the_rows(bad):
    """A NaN distance made the greedy pick the same row several times; now it is an error."""
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    features[2, 1] = bad
    with pytest.raises(ValueError, match=r"finite.*rows \[2\]"):
        select_diverse(features, 4)


@pytest.mark.parametrize("k", [-1, 2.5, 2.0, True, False, "3", None])
def test_k_must_be_a_non_negative_integer(k):
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        select_diverse(torch.randn(6, 4), k)


@pytest.mark.parametrize("shape", [(6,), (2, 6, 4), ()])
def test_features_must_be_two_dimensional(shape):
    with pytest.raises(ValueError, match=r"2-D \[n, d\], got shape"):
        select_diverse(torch.randn(shape), 2)


def test_integer_like_k_selects_as_int():
    import numpy as np

    features = torch.randn(12, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = reference_max_min(features, 5)
    for k in (5, np.int64(5), torch.tensor(5)):
        assert select_diverse(features, k).tolist() == expected


def bf16(value: float) -> float:
    """A Python float rounded to the nearest bfloat16 (through float32, as a float32 result is stored)."""
    return torch.tensor(value, dtype=torch.float32).to(torch.bfloat16).item()


def bf16_distances(features: torch.Tensor) -> list[list[float]]:
    """1 - cos(f_i, f_j) with every stored value in bfloat16, as the public VLA-Pruner code keeps them
    (features, norms, unit vectors, similarities, distances); sums exact (math.fsum), one pair at a time."""
    rows = [[bf16(v) for v in row] for row in features.tolist()]
    units = []
    for row in rows:
        norm = bf16(math.sqrt(math.fsum(v * v for v in row)))
        units.append([bf16(v / norm) for v in row])
    return [[bf16(1.0 - bf16(math.fsum(a * b for a, b in zip(u, w)))) for w in units] for u in units]


@pytest.mark.parametrize("seed, n, k", [(s, n, k) for s in range(6) for n, k in ((6, 3), (20, 10), (24, 23))])
def test_bfloat16_matches_pairwise_reference_in_bfloat16(seed, n, k, cpu_product):
    features = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    distances = bf16_distances(features)
    expected = reference_greedy(n, k, lambda i, j: distances[i][j])
    assert select_diverse(features, k, dtype=torch.bfloat16).tolist() == expected


def test_bfloat16_picks_differ_from_float32_where_rounding_ties_distances():
    """bf16 distances step by 2^-8 near 1, so close candidates tie and the lower index wins: on some inputs
    the picks differ from float32 (the precision is a real switch), always as the bf16 reference says."""
    differing = 0
    for seed in range(20):
        features = torch.randn(20, 8, generator=torch.Generator().manual_seed(seed))
        picks = select_diverse(features, 10, dtype=torch.bfloat16).tolist()
        distances = bf16_distances(features)
        assert picks == reference_greedy(20, 10, lambda i, j: distances[i][j])
        differing += picks != select_diverse(features, 10).tolist()
    assert differing > 0


def test_float32_dtype_is_the_default_path():
    features = torch.randn(30, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(select_diverse(features, 12, dtype=torch.float32), select_diverse(features, 12))


def test_bfloat16_of_bfloat16_features_on_their_device():
    features = torch.randn(12, 8, generator=torch.Generator().manual_seed(4))
    picks = select_diverse(features.to(torch.bfloat16), 5, dtype=torch.bfloat16)
    assert picks.tolist() == select_diverse(features, 5, dtype=torch.bfloat16).tolist()
    assert picks.dtype == torch.long and picks.device == features.device


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, "bfloat16"])
def test_other_dtypes_are_refused(dtype):
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.bfloat16"):
        select_diverse(torch.randn(6, 4), 2, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_choosing_among_rows_equals_choosing_on_their_copy_and_leaves_features_alone(dtype):
    features = torch.randn(40, 16, generator=torch.Generator().manual_seed(5))
    original = features.clone()
    rows = torch.tensor([3, 4, 8, 15, 16, 23, 31, 38, 39])
    picks = select_diverse(features, 4, dtype=dtype, rows=rows)
    assert torch.equal(picks, rows[select_diverse(features[rows], 4, dtype=dtype)])
    assert torch.equal(features, original)
    assert torch.equal(select_diverse(features, 20, rows=rows), rows)  # k >= len(rows): all of them, in order
    features[15, 2] = float("nan")
    with pytest.raises(ValueError, match=r"finite.*rows \[3\]"):  # named by position among the chosen rows
        select_diverse(features, 4, rows=rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_features_that_require_grad_select_as_their_detached_copy(dtype, cpu_product):
    features = torch.randn(20, 16, generator=torch.Generator().manual_seed(0))
    expected = select_diverse(features, 5, dtype=dtype).tolist()
    assert select_diverse(features.clone().requires_grad_(), 5, dtype=dtype).tolist() == expected
