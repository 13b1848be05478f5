"""VLA-ADP's rules (`baselines.vla_adp`) against a reference transcription of the official code, written separately
below (plain NumPy, float64, loops; spec §2.1-2.2 of the 2026 methods notes): the layer-0 q.k importance, the
per-camera budget and top-k, and the motion gate over whole episodes, on many seeded random inputs; the published
per-camera counts; and that changing one of the reference's constants makes it disagree."""
from collections import deque

import numpy as np
import pytest
import torch

from baselines.vla_adp import (KEEP_SPLIT, MotionGate, VLAADPConfig, adp_select, camera_budgets, keep_total,
                               qk_importance, split_counts)

IMAGES = (256, 256)
CHUNK = 8

# ------------------------------------------------------------------------------------------- reference


def reference_importance(text, vision, norm_weight, eps, q_weight, k_weight, heads, head_dim) -> np.ndarray:
    """`_compute_qk_importance_generic` at layer 0, step by step: RMSNorm of every row (x / sqrt(mean x^2 + eps) *
    weight), q_proj of the text rows, k_proj of the visual rows, split into heads, then for every head and every text
    row the scores q.k / sqrt(head_dim) against all visual rows, averaged over heads and rows."""
    def norm(rows):
        return np.stack([r / np.sqrt(np.mean(r * r) + eps) * norm_weight for r in rows])

    q, k = norm(text) @ q_weight.T, norm(vision) @ k_weight.T
    total = np.zeros(len(vision))
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        for t in range(len(text)):
            total += (k[:, part] @ q[t, part]) / np.sqrt(head_dim)
    return total / (heads * len(text))


def reference_counts(ratio, weights, visual=512):
    """keep_total = max(1, int(round(V * ratio))); the split of `_compute_split_counts`: normalised weights,
    max(1, int(round(total * p))), then the difference fixed one token at a time walking the cameras by descending
    weight (Python's stable reverse sort) in a cycle, a camera at 1 not lowered."""
    total = max(1, int(round(visual * ratio)))
    s = sum(max(0.0, float(w)) for w in weights)
    norm = [float(w) / s for w in weights]
    counts = [max(1, int(round(total * p))) for p in norm]
    diff = total - sum(counts)
    order = sorted(range(len(norm)), key=lambda i: norm[i], reverse=True)
    idx = 0
    while diff != 0:
        i = order[idx]
        if diff > 0:
            counts[i] += 1
            diff -= 1
        elif counts[i] > 1:
            counts[i] -= 1
            diff += 1
        idx = (idx + 1) % len(order)
    return counts


def reference_select(importance, ratio, weights, per_image=256) -> list[list[int]]:
    """Each camera keeps its min(count, 256) largest importances (ties: lower index), as within-camera indices in
    sequence order."""
    kept = []
    for i, count in enumerate(reference_counts(ratio, weights, per_image * len(weights))):
        scores = importance[i * per_image:(i + 1) * per_image]
        ranked = sorted(range(per_image), key=lambda j: (-scores[j], j))
        kept.append(sorted(ranked[:min(count, per_image)]))
    return kept


def reference_gate(step_positions, window=3, initial=0, last_state=False, limit=3, method="adjacent", delta="net",
                   min_step=0.0) -> list[int]:
    """The A' runner's `_OnlineStrategyController` over one episode: the end effector is at
    step_positions[t] before env step t; a query every CHUNK steps opens a window (its position) when none is open,
    every step appends the new position, and when the chunk is used up the window closes and decides the next
    query's state. Returns each query's state (1 pruned, 0 dense)."""
    state, streak = initial, (1 if initial == 1 and limit is not None else 0)
    history, avg, window_positions, states = [], None, None, []
    queue = deque()
    for t in range(len(step_positions) - 1):
        if not queue:
            if window_positions is None:
                window_positions = [step_positions[t]]
            states.append(state)
            queue.extend(range(CHUNK))
        queue.popleft()
        window_positions.append(step_positions[t + 1])
        if queue:
            continue
        if delta == "net":
            d = float(np.linalg.norm(np.asarray(window_positions[-1]) - np.asarray(window_positions[0])))
        else:  # "sum": every step's distance, those under min_step as 0
            d = 0.0
            for a, b in zip(window_positions, window_positions[1:]):
                step = float(np.linalg.norm(np.asarray(b) - np.asarray(a)))
                d += 0.0 if step < min_step else step
        if method == "avg":
            avg = d if avg is None else 0.5 * avg + 0.5 * d
            new = 1 if d >= avg else 0
        else:
            lw = max(3, window)
            history.append(d)
            if len(history) < lw:
                new = initial
            else:
                before = history[-(lw - 1) - 1:-1]
                new = 1 if d >= max(before) else 0 if d < min(before) else (state if last_state else 1)
        if limit is not None:
            if new == 1:
                if streak >= limit:
                    new, streak = 0, 0
                else:
                    streak += 1
            else:
                streak = 0
        state, window_positions = new, None
    return states


def implementation_gate(step_positions, config=VLAADPConfig(), per_step=True) -> list[int]:
    """MotionGate driven as a policy would: query() at every CHUNK-th step, step() after the others' env steps."""
    gate, states = MotionGate(config), []
    for t in range(len(step_positions) - 1):
        if t % CHUNK == 0:
            states.append(int(gate.query(step_positions[t])))
        if per_step and (t + 1) % CHUNK:
            gate.step(step_positions[t + 1])
    return states


# ----------------------------------------------------------------------------------------------- inputs


def random_scoring_inputs(rng, text_rows, d=32, heads=4, head_dim=8):
    f = lambda *shape: rng.normal(size=shape)  # noqa: E731
    return (f(text_rows, d) + f(d), f(512, d) + f(d), rng.uniform(0.5, 1.5, d), float(rng.choice([1e-5, 1e-6])),
            f(heads * head_dim, d) / np.sqrt(d), f(heads * head_dim, d) / np.sqrt(d), heads, head_dim)


def random_trajectory(rng, chunks) -> list[np.ndarray]:
    """End-effector positions before each env step: per chunk a random speed (some chunks nearly still) and a
    random walk."""
    positions = [rng.uniform(-0.3, 0.3, 3)]
    for _ in range(chunks):
        speed = rng.choice([rng.uniform(0, 0.002), rng.uniform(0, 0.03)])
        for _ in range(CHUNK):
            positions.append(positions[-1] + speed * rng.normal(size=3))
    return positions


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("seed", range(20))
def test_importance_and_kept_tokens_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    inputs = random_scoring_inputs(rng, int(rng.integers(3, 20)))
    importance = qk_importance(*[torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in inputs])
    reference = reference_importance(*inputs)
    np.testing.assert_allclose(importance.numpy(), reference, rtol=1e-9, atol=1e-12)
    for ratio in (0.3, 0.5, 0.75, float(rng.uniform(0.02, 0.99))):
        split = KEEP_SPLIT if seed % 2 else tuple(rng.uniform(0.1, 1.0, 2))
        kept = adp_select(importance, ratio, split, IMAGES)
        assert [k.tolist() for k in kept] == reference_select(reference, ratio, split), ratio


def test_float32_inputs_score_in_float32_close_to_the_reference():
    inputs = random_scoring_inputs(np.random.default_rng(0), 9)
    float32 = [torch.from_numpy(x).float() if isinstance(x, np.ndarray) else x for x in inputs]
    importance = qk_importance(*float32)
    assert importance.dtype == torch.float32
    np.testing.assert_allclose(importance.numpy(), reference_importance(*inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", range(10))
def test_ties_go_to_the_lower_index_in_each_camera(seed):
    """Importance with few distinct values: many ties at every cut-off."""
    rng = np.random.default_rng(100 + seed)
    importance = rng.integers(0, 5, 512).astype(np.float64)
    for ratio in (0.1, 0.3, 0.5, 0.9):
        kept = adp_select(torch.from_numpy(importance), ratio, KEEP_SPLIT, IMAGES)
        assert [k.tolist() for k in kept] == reference_select(importance, ratio, KEEP_SPLIT)


def test_the_published_per_camera_counts():
    """Spec §2.1: primary / wrist tokens for the paper's ratios and the README's 0.75."""
    table = {0.3: (62, 92), 0.4: (82, 123), 0.5: (102, 154), 0.6: (123, 184), 0.7: (143, 215), 0.75: (154, 230)}
    for ratio, counts in table.items():
        assert camera_budgets(ratio, KEEP_SPLIT, IMAGES) == counts == tuple(reference_counts(ratio, KEEP_SPLIT))
        assert sum(counts) == keep_total(ratio, 512)
    assert [keep_total(r, 512) for r in table] == [154, 205, 256, 307, 358, 384]
    assert camera_budgets(0.9, KEEP_SPLIT, IMAGES) == (184, 256)  # the wrist share (277) clipped: 440 < 461
    assert keep_total(0.5009765625, 512) == 256  # 256.5: Python's round, half to even
    assert split_counts(5, (0.5, 0.5)) == [3, 2]  # 2.5 -> 2 each, the remainder to the first of equal weights


@pytest.mark.parametrize("seed", range(30))
def test_random_splits_count_as_the_reference(seed):
    rng = np.random.default_rng(seed)
    weights = tuple(rng.uniform(0.05, 1.0, int(rng.integers(2, 4))))
    for ratio in rng.uniform(0.01, 1.0, 10):
        total = keep_total(ratio, 256 * len(weights))
        if total >= len(weights):
            assert split_counts(total, weights) == reference_counts(ratio, weights, 256 * len(weights))


def test_no_split_ranks_both_cameras_jointly_and_ratio_one_keeps_all():
    importance = torch.arange(512, dtype=torch.float64)  # the wrist camera holds every top token
    kept = adp_select(importance, 0.25, None, IMAGES)
    assert kept[0].tolist() == [] and kept[1].tolist() == list(range(128, 256))
    assert [len(k) for k in adp_select(importance, 1.0, KEEP_SPLIT, IMAGES)] == [256, 256]


@pytest.mark.parametrize("seed", range(25))
def test_the_motion_gate_decides_as_the_reference(seed):
    rng = np.random.default_rng(seed)
    positions = random_trajectory(rng, 30)
    assert implementation_gate(positions) == reference_gate(positions)
    assert implementation_gate(positions, per_step=False) == reference_gate(positions)  # "net": query positions
    window, initial, last_state = int(rng.integers(1, 7)), int(rng.integers(0, 2)), bool(rng.integers(0, 2))
    limit = [None, 1, 2, 3, 5][seed % 5]
    min_step = float(rng.choice([0.0, 0.01]))
    for method in ("adjacent", "avg"):
        for delta in ("net", "sum"):
            config = VLAADPConfig(decision=method, extrema_window=window, initial_state=initial,
                                  last_state=last_state, max_consecutive_pruned=limit, delta=delta,
                                  min_delta_pos=min_step)
            assert implementation_gate(positions, config) == reference_gate(
                positions, window, initial, last_state, limit, method, delta, min_step), config


def chunked_trajectory(speeds) -> list[np.ndarray]:
    """Straight along x, each chunk at its own speed (multiples of 2^-10 m per step: exact sums, exact ties)."""
    positions = [np.zeros(3)]
    for speed in speeds:
        for _ in range(CHUNK):
            positions.append(positions[-1] + [speed / 1024, 0, 0])
    return positions


def test_the_readme_config_runs_three_dense_queries_then_prunes_unless_a_new_minimum():
    # chunk k's displacement decides query k+1: queries 1, 2 have fewer than 3 deltas -> dense (initial state);
    # 3: 5 >= max(5, 5) -> pruned; 4, 5 rise -> pruned; 6: 1 < min(6, 7) -> dense; 7: 2 between 1 and 7 -> pruned
    # ("else 1"); 8, 9 rise -> pruned; 10: a 4th pruned query in a row -> forced dense
    positions = chunked_trajectory([5, 5, 5, 6, 7, 1, 2, 3, 4, 5, 6])
    assert implementation_gate(positions) == reference_gate(positions) == [0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0]


def test_without_the_gate_every_query_is_pruned():
    positions = random_trajectory(np.random.default_rng(0), 10)
    assert implementation_gate(positions, VLAADPConfig(gate=False)) == [1] * 10


def test_config_checks():
    assert VLAADPConfig().split == (0.4, 0.6) and VLAADPConfig().decision == "adjacent"
    for bad in ({"decision": "median"}, {"delta": "arc"}, {"initial_state": 2}, {"split": (0.4, -0.6)},
                {"extrema_window": 0}, {"max_consecutive_pruned": 2.5}):
        with pytest.raises(ValueError):
            VLAADPConfig(**bad)


# ------------------------------------------------------------------------------------------ sensitivity


def test_a_changed_split_in_the_reference_disagrees():
    importance = reference_importance(*random_scoring_inputs(np.random.default_rng(7), 8))
    kept = [k.tolist() for k in adp_select(torch.from_numpy(importance), 0.5, KEEP_SPLIT, IMAGES)]
    assert kept == reference_select(importance, 0.5, (0.4, 0.6))
    assert kept != reference_select(importance, 0.5, (0.5, 0.5))  # 102 / 154 against 128 / 128 tokens


def test_a_changed_streak_limit_in_the_reference_disagrees():
    """Ever faster chunks: every delta is a new maximum, so only the streak limit makes a query dense."""
    positions = chunked_trajectory(range(1, 13))
    states = implementation_gate(positions)
    assert states == reference_gate(positions, limit=3) == [0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert states != reference_gate(positions, limit=4)
    assert states != reference_gate(positions, window=4)  # Lw = 4: query 3 is still dense
