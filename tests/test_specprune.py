"""SpecPrune-VLA's rules (`baselines.specprune`) against a reference transcription of the official code, written
separately below (plain NumPy, loops, the official absolute sequence positions; spec §3 of the 2026 methods notes):
static patches from two frames, the two cuts on full attention maps of an OpenVLA-OFT sequence, the lag and the
coarse/precise controller over whole episodes, on many seeded random inputs; the published constants; and that
changing one of the reference's constants makes it disagree."""
from collections import deque

import numpy as np
import pytest
import torch

from baselines import specprune as sp
from baselines.specprune import (ModeController, SpecPruneConfig, attention_counts, cut1_keep, cut2_keep, lag_steps,
                                 lagged_frame, static_counts, static_patches)

GRID, PATCH = 16, 14
CHUNK = 8

# ------------------------------------------------------------------------------------------- reference


def reference_similarity(frame: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """`calculate_patch_similarity` one patch at a time: the 14 x 14 x 3 block in row-major patch order, float32,
    dot / (norm * norm + 1e-8)."""
    out = np.zeros(GRID * GRID, dtype=np.float32)
    for row in range(GRID):
        for col in range(GRID):
            block = np.s_[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH]
            a, b = frame[block].astype(np.float32).ravel(), previous[block].astype(np.float32).ravel()
            norms = np.sqrt(np.sum(a * a)) * np.sqrt(np.sum(b * b))
            out[row * GRID + col] = np.sum(a * b) / (norms + np.float32(1e-8))
    return out


def reference_static(frame, previous, k, threshold=0.986) -> list[int]:
    """`get_similarity_indices`: patches with similarity >= threshold, the min(k, eligible) most similar (ties: lower
    index, where argpartition is arbitrary), as 0-based indices within the camera, sorted."""
    similarity = reference_similarity(frame, previous)
    eligible = [i for i in range(GRID * GRID) if similarity[i] >= threshold]
    return sorted(sorted(eligible, key=lambda i: (-similarity[i], i))[:k])


def reference_lag(summed: np.ndarray) -> int:
    move_v = np.linalg.norm(summed[:3])
    return min(int((-16 / 3 * move_v / 6 + 22 / 3)) + 3, 6)


def ranked(scores, k) -> list[int]:
    """The k largest scores' indices, largest first, ties to the lower index (torch.topk's are unspecified)."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:k]


def reference_cut1(attn0: np.ndarray, prompt: int, static: list[int], k_attn: tuple[int, int]):
    """modeling_llama.py after layer 0, on the head-averaged [S, S] map of the whole sequence (BOS | 1..256 primary |
    257..512 wrist | 513 proprio | P prompt | 56 | </s>): `static` holds absolute positions. Returns (the kept
    absolute positions, the retain mask over all positions, each camera's A0 as absolute positions, ranked)."""
    retain = np.ones(513, dtype=bool)
    retain[static] = False
    a0 = []
    for offset, k in zip((1, 257), k_attn):
        rows = [r for r in range(len(attn0)) if 513 + 10 <= r < 513 + prompt]
        scores = attn0[rows][:, offset:offset + 256].mean(0)
        a0.append([offset + j for j in ranked(scores, 3 * k)])
        retain[a0[-1]] = True
    all_retain = np.ones(len(attn0), dtype=bool)
    all_retain[:513] = retain
    return np.flatnonzero(all_retain), all_retain, a0


def reference_cut2(attn1: np.ndarray, positions: np.ndarray, all_retain: np.ndarray, prompt: int, static: list[int],
                   a0: list[list[int]], k_attn: tuple[int, int], behaviour: str) -> np.ndarray:
    """After layer 1, on the [S', S'] map of the rows kept at cut 1 (`positions`, their absolute positions): rows
    [-1 - 56 - P + 10, -1 - 56), columns of each camera's kept tokens; A1 released = rank + the camera's offset."""
    mask = all_retain.copy()
    mask[static] = False
    for offset, k, camera_a0 in zip((1, 257), k_attn, a0):
        columns = [j for j, p in enumerate(positions) if offset <= p < offset + 256]
        scores = attn1[-1 - 56 - prompt + 10:-1 - 56][:, columns].mean(0)
        a1 = [offset + r if behaviour == "released" else positions[columns[r]] for r in ranked(scores, k)]
        mask[a1] = True
        mask[camera_a0[:k]] = True
    return positions[mask[positions]]


def reference_controller(chunks, steps, replan, checked_after=10, velocity_threshold=0.4):
    """run_libero_eval.py's episode loop without the action adapter: a query whenever the queue is empty (its mode and
    prev_T recorded), every popped action executed, summed into history_action and, from acting step 11, run through
    the mode switch; a replan request clears the queue when `replan`. Returns (per query (precise, prev_T), per step
    the replan request)."""
    chunks = iter(chunks)
    queue, history = deque(), np.zeros(7)
    precise, cur_mode, queries, requests = False, True, [], []
    for acting_steps in range(1, steps + 1):
        if not queue:
            queries.append((precise, reference_lag(history)))
            queue.extend(next(chunks))
            history = np.zeros(7)
        action = queue.popleft()
        history += action
        if_replan = False
        velocity, xy, rot, z = (np.linalg.norm(action[0:3]), np.linalg.norm(action[0:2]),
                                np.linalg.norm(action[3:6]), action[2])
        if acting_steps > checked_after:
            if precise:
                precise = False if z > 0.2 or rot > 0.3 and len(queue) == 0 else True
            else:
                precise = True if velocity < velocity_threshold or xy < 0.1 and z < 0.1 and rot < 0.2 else False
                if cur_mode is False and precise and len(queue) > 0:
                    if_replan = True
            cur_mode = precise
        requests.append(if_replan)
        if if_replan and replan:
            queue.clear()
    return queries, requests


# ----------------------------------------------------------------------------------------------- inputs


def random_frames(rng, copied: float = 0.3, blend: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 224 x 224 x 3 frame and a lagged one: about `copied` of its patches exact copies (static), the
    rest blended with noise by a random amount per patch (similarities from ~0.75 to ~1)."""
    frame = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    noise = rng.integers(0, 256, (224, 224, 3)).astype(np.float64)
    amount = np.kron(rng.uniform(0, blend, (GRID, GRID)) * (rng.random((GRID, GRID)) > copied),
                     np.ones((PATCH, PATCH)))[..., None]
    lagged = np.rint((1 - amount) * frame + amount * noise).astype(np.uint8)
    return frame, lagged


def harness_attention(attention: np.ndarray, rows: slice, columns) -> list[torch.Tensor]:
    """What the engine hands a stage: the prompt rows of a full map, per camera its visual columns."""
    return [torch.from_numpy(attention[rows][:, c]) for c in columns]


def random_map(rng, size: int, ties: bool) -> np.ndarray:
    attention = rng.random((size, size))
    return np.round(attention * 4) / 4 if ties else attention


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("seed", range(12))
def test_static_patches_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    frame, lagged = random_frames(rng, copied=float(rng.uniform(0, 0.9)), blend=[0.25, 1.0][seed % 2])
    for k in (0, 56, 200, 220, int(rng.integers(1, 257))):
        for threshold in (0.986, float(rng.uniform(0.8, 1.0))):
            assert static_patches(frame, lagged, k, threshold).tolist() == reference_static(frame, lagged, k,
                                                                                            threshold)
    # a frame against itself (query 0): every patch ~1, the k taken by the tie rule among float-rounded values
    assert static_patches(frame, frame, 200).tolist() == reference_static(frame, frame, 200)
    assert len(static_patches(frame, frame, 200)) == 200


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("behaviour", ["released", "intended"])
def test_both_cuts_equal_the_reference_on_full_attention_maps(seed, behaviour):
    """Random maps of a whole OFT sequence (some with many ties), random static sets of 0..256 tokens per camera,
    coarse or precise: the inputs cut as the engine would hand them (the prompt rows, per camera the columns of its
    kept tokens) give the reference's kept positions after each cut."""
    rng = np.random.default_rng(seed)
    prompt = int(rng.integers(11, 40))
    S = 571 + prompt
    precise = bool(seed % 2)
    k_attn = attention_counts(precise)
    sizes = [int(rng.choice([0, 30, 200, 220, 256])) for _ in range(2)]
    static = [np.sort(rng.choice(256, n, replace=False)) for n in sizes]
    static_positions = [1 + int(j) for j in static[0]] + [257 + int(j) for j in static[1]]
    attn0 = random_map(rng, S, ties=seed % 4 == 0)
    positions, all_retain, a0 = reference_cut1(attn0, prompt, static_positions, k_attn)
    attn1 = random_map(rng, len(positions), ties=seed % 4 == 1)
    expected = reference_cut2(attn1, positions, all_retain, prompt, static_positions, a0, k_attn, behaviour)

    text0 = harness_attention(attn0, slice(514, 514 + prompt), [slice(1, 257), slice(257, 513)])
    first = [cut1_keep(a, torch.from_numpy(s), k) for a, s, k in zip(text0, static, k_attn)]
    assert [(1 + i * 256 + kept).tolist() for i, (kept, _) in enumerate(first)] == \
        [[p for p in positions if 1 + i * 256 <= p < 257 + i * 256] for i in range(2)]
    kept_rows = {int(p): j for j, p in enumerate(positions)}  # kept sequence row of each kept position
    columns = [[kept_rows[1 + i * 256 + int(v)] for v in kept] for i, (kept, _) in enumerate(first)]
    text1 = harness_attention(attn1, slice(len(positions) - 57 - prompt, len(positions) - 57), columns)
    second = [cut2_keep(a, kept, torch.from_numpy(s), a0_i, k, behaviour)
              for a, (kept, a0_i), s, k in zip(text1, first, static, k_attn)]
    assert [(1 + i * 256 + kept).tolist() for i, kept in enumerate(second)] == \
        [[p for p in expected if 1 + i * 256 <= p < 257 + i * 256] for i in range(2)]


def test_the_released_a1_names_a_rank_not_a_token():
    """Tokens 0..249 static; layer 0 attends most to 240, 241, ... so A0 (3 k_a = 9) = 240..248 and cut 1 keeps them
    with the non-static 250..255. At layer 1 the kept columns 6, 7, 8 (tokens 246..248) are the most attended:
    released, A1 = tokens 6, 7, 8 (their ranks), no longer kept, so cut 2 keeps the non-static ones and A0's top 3;
    intended, A1 = 246..248, kept although static."""
    static, prompt, k = torch.arange(250), 12, 3
    attention0 = torch.zeros(prompt, 256)
    attention0[:, 240:] = torch.linspace(1.0, 0.5, 16)
    kept, a0 = cut1_keep(attention0, static, k)
    assert a0.tolist() == list(range(240, 249)) and kept.tolist() == list(range(240, 249)) + list(range(250, 256))
    attention1 = torch.zeros(prompt, len(kept))
    attention1[:, 6:9] = 1.0
    assert cut2_keep(attention1, kept, static, a0, k).tolist() == [240, 241, 242, *range(250, 256)]
    assert cut2_keep(attention1, kept, static, a0, k, "intended").tolist() == [240, 241, 242, 246, 247, 248,
                                                                               *range(250, 256)]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("replan", [False, True])
def test_the_controller_equals_the_reference_over_episodes(seed, replan):
    """Random executed actions (some chunks slow or still, some rotating or rising): each query's mode and lag, and
    each step's replan request, with the harness's fixed chunks (replan reported only) and with the official
    queue clearing."""
    rng = np.random.default_rng(seed)
    chunks = []
    for _ in range(60):
        scale, rot = rng.choice([0.03, 0.2, 0.5, 1.5]), rng.choice([0.02, 0.2, 0.5])
        chunk = np.concatenate([rng.normal(0, scale, (CHUNK, 3)), rng.normal(0, rot, (CHUNK, 3)),
                                rng.choice([-1.0, 1.0], (CHUNK, 1))], axis=1)
        chunks.append(list(chunk))
    queries, requests = reference_controller(chunks, 200, replan)
    controller, got_queries, got_requests, queue, source = ModeController(), [], [], deque(), iter(chunks)
    for _ in range(200):
        if not queue:
            mode = controller.start_query()
            got_queries.append((mode.precise, mode.lag))
            queue.extend(next(source))
        action = queue.popleft()
        got_requests.append(controller.step(action, len(queue)))
        if replan and got_requests[-1]:
            queue.clear()
    assert got_queries == queries and got_requests == requests
    assert any(p for p, _ in queries) and not all(p for p, _ in queries) and any(requests)
    assert len({lag for _, lag in queries}) > 2


def test_no_replan_at_the_first_check():
    """The runner's cur_mode starts True, so entering precise mode at the first checked step (11) does not replan;
    the same switch later does."""
    still, fast = np.zeros(7), np.array([1.0, 0, 0, 0, 0, 0, 0])
    controller = ModeController()
    controller.start_query()
    requests = [controller.step(fast if t < 10 else still, (7 - t) % 8) for t in range(11)]
    assert controller.precise and not any(requests)
    controller = ModeController()
    controller.start_query()
    requests = [controller.step(fast if t < 11 else still, (7 - t) % 8) for t in range(12)]
    assert controller.precise and requests[-1]


def test_lag_and_the_lagged_frame():
    """prev_T's breakpoints (spec §3.1) and which per-step frame the official runner would compare with."""
    expected = {0.0: 6, 4.87: 6, 4.88: 5, 5.99: 5, 6.01: 4, 7.12: 4, 7.13: 3, 9.37: 3, 9.38: 2, 10.49: 2, 10.51: 1,
                11.62: 1, 11.63: 0, 13.0: -1}
    for move_v, lag in expected.items():
        for direction in (np.array([1.0, 0, 0]), np.array([0.6, -0.8, 0]), np.array([0, 0, -1.0])):
            summed = np.concatenate([move_v * direction, [5.0, 5.0, 5.0, 1.0]])  # rotation and gripper ignored
            assert lag_steps(summed) == lag == reference_lag(summed), move_v
    history = [np.full((2, 2, 3), i, dtype=np.uint8) for i in range(10)]
    assert lagged_frame(history, 6, first_query=True) is history[-1]
    assert lagged_frame(history, 6, first_query=False) is history[4]  # 5 env steps back
    assert lagged_frame(history[:3], 6, first_query=False) is history[2]  # too few frames: the current one
    assert lagged_frame(history, 1, first_query=False) is history[-1]
    assert lagged_frame(history, 0, first_query=False) is history[0]  # Python indexing, as the runner


def test_the_published_constants():
    assert (sp.ATTN_TOPK, sp.ATTN_TOPK_WRIST, sp.ATTN_TOPK_PRECISE, sp.ATTN_TOPK_PRECISE_WRIST) == (16, 12, 25, 19)
    assert attention_counts(False) == (16, 12) and attention_counts(True) == (25, 19)
    assert (sp.PRIMARY_TOPK, sp.PRIMARY_TOPK_PRECISE, sp.WRIST_TOPK, sp.WRIST_TOPK_PRECISE) == (200, 220, 200, 220)
    assert (sp.VELOCITY_THRES, sp.ROT_THRES, sp.XY_THRES, sp.Z_THRES) == (0.4, 0.2, 0.1, 0.1)
    assert (sp.DYNAMIC_PRUNE_RATIO, sp.STATIC_PRUNE_RATIO, sp.SKIP_LAYER, sp.SIMILARITY_THRESHOLD) == (0.8, 0.8, 0, 0.986)
    assert static_counts(56 / 256) == (200, 220)  # the release
    assert [static_counts(keep) for keep in (0.5, 0.25, 0.125)] == [(128, 141), (192, 211), (224, 246)]
    assert static_counts(0.0) == (256, 256)  # the precise count is capped at the camera's tokens
    config = SpecPruneConfig()
    assert (config.threshold, config.static_topk, config.behaviour, config.action_aware) == (0.986, None,
                                                                                             "released", True)
    for bad in ({"behaviour": "paper"}, {"threshold": 1.5}, {"static_topk": 300}):
        with pytest.raises(ValueError):
            SpecPruneConfig(**bad)


# ------------------------------------------------------------------------------------------ sensitivity


def test_a_changed_similarity_threshold_in_the_reference_disagrees():
    """Patches with similarity in [0.98, 0.986) are static only at 0.98; with k = 256 every eligible one is taken."""
    frame, lagged = random_frames(np.random.default_rng(3), copied=0.2, blend=0.4)
    similarity = reference_similarity(frame, lagged)
    assert np.any((similarity >= 0.98) & (similarity < 0.986))
    kept = static_patches(frame, lagged, 256).tolist()
    assert kept == reference_static(frame, lagged, 256)
    assert kept != reference_static(frame, lagged, 256, threshold=0.98)


def test_a_changed_a1_mapping_in_the_reference_disagrees():
    """With many static tokens cut at layer 0, the released rank + offset and the intended token differ."""
    rng = np.random.default_rng(5)
    prompt, k_attn = 20, attention_counts(False)
    static = [1 + j for j in range(0, 200)] + [257 + j for j in range(0, 200)]
    attn0 = random_map(rng, 571 + prompt, ties=False)
    positions, all_retain, a0 = reference_cut1(attn0, prompt, static, k_attn)
    attn1 = random_map(rng, len(positions), ties=False)
    released = reference_cut2(attn1, positions, all_retain, prompt, static, a0, k_attn, "released")
    intended = reference_cut2(attn1, positions, all_retain, prompt, static, a0, k_attn, "intended")
    assert released.tolist() != intended.tolist()


def test_a_changed_controller_threshold_in_the_reference_disagrees():
    """Steps at speed 0.45 (and rotating): coarse at the released 0.4, precise from the first check at 0.5."""
    chunks = [[np.array([0.45, 0, 0, 0.25, 0, 0, 1.0])] * CHUNK] * 5
    controller, modes = ModeController(), []
    for t in range(40):
        if t % CHUNK == 0:
            modes.append((controller.start_query().precise, 6))
        controller.step(chunks[0][0], 7 - t % CHUNK)
    assert modes == reference_controller(chunks, 40, replan=False)[0] == [(False, 6)] * 5
    assert modes != reference_controller(chunks, 40, replan=False, velocity_threshold=0.5)[0]
