"""select_diverse against a plain pairwise reference on small inputs."""
import itertools

import pytest
import torch

from vla_pruner.diversity import select_diverse


def reference_max_min(features: torch.Tensor, k: int) -> list[int]:
    """The rule as written, one pair at a time (the reference implementation's shape)."""
    n = len(features)

    def d(i, j):
        return 1.0 - torch.nn.functional.cosine_similarity(features[i], features[j], dim=0).item()

    nearest = [min(d(i, j) for j in range(n) if j != i) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(d(i, c) for c in chosen), -i)))
    return chosen


@pytest.mark.parametrize("seed, n, k", [(s, n, k) for s in range(5) for n, k in ((6, 3), (12, 5), (20, 19))])
def test_matches_pairwise_reference(seed, n, k):
    features = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert select_diverse(features, k).tolist() == reference_max_min(features, k)


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
