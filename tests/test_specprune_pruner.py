"""The `specprune` pruner on the OpenVLA-OFT fixture checkpoint, over a recorded sequence of queries (the fixture's
LLM inputs, a chain of frames, the actions each query's chunk executed): which tokens each query keeps after each
cut, against the separate transcription of the official code in tests/test_specprune.py (its static patches,
both cuts on the eager attention maps of layers 0 and 1, its controller); and that changing one of the reference's
constants makes them disagree. keep=1.0 = dense is in the loops over pruners (test_engine.py,
test_openvla_oft_model.py)."""
import numpy as np
import pytest
import torch

from vla_pruner.models.llama import bidirectional_mask
from vla_pruner.models.openvla_oft.model import sequence_layout
from vla_pruner.pruning import QueryContext
from tests.references import eager_attention
from tests.test_openvla_oft_model import engine_for, fixture, queries  # noqa: F401 (fixtures)
from tests.test_specprune import reference_controller, reference_cut1, reference_cut2, reference_static

KEEP = 0.25
PATCH, GRID = 14, 16
# the chunk each query's predecessor executed: fast, slow (-> precise), rising (-> coarse), slow (-> precise), fast
CHUNKS = [np.tile([0.5, 0, 0, 0, 0, 0, -1.0], (8, 1)), np.tile([0.05, 0, 0, 0, 0, 0, -1.0], (8, 1)),
          np.tile([0, 0, 0.45, 0, 0, 0, 1.0], (8, 1)), np.tile([0.05, 0.02, 0, 0, 0, 0, 1.0], (8, 1)),
          np.tile([0.6, 0, 0, 0, 0, 0, 1.0], (8, 1))]
QUERIES = len(CHUNKS) + 1


def frame_chain(seed: int = 0) -> list[list[np.ndarray]]:
    """Per query, both cameras' frames: black at query 0 (nothing is static against itself: 0 / 1e-8), then each
    frame the previous one with ~70 % of its patches replaced or blended with noise (the copies are static)."""
    rng = np.random.default_rng(seed)
    frames = [[np.zeros((224, 224, 3), np.uint8)] * 2]
    for _ in range(QUERIES - 1):
        step = []
        for previous in frames[-1]:
            base = rng.integers(0, 256, (224, 224, 3)) if not previous.any() else previous
            noise = rng.integers(0, 256, (224, 224, 3))
            amount = np.kron(rng.uniform(0, 1, (GRID, GRID)) * (rng.random((GRID, GRID)) > 0.3),
                             np.ones((PATCH, PATCH)))[..., None]
            step.append(np.rint((1 - amount) * base + amount * noise).astype(np.uint8))
        frames.append(step)
    return frames


def head_mean(attention: torch.Tensor) -> np.ndarray:
    return attention[0].double().mean(0).numpy()


@torch.inference_mode()
def reference_query(model, embeds, frames, previous, precise, k_static, behaviour="released",
                    threshold=0.986) -> tuple[list[int], list[int]]:
    """The official cuts of one query (absolute positions kept after layer 0 and after layer 1): eager attention of
    layer 0 on every row, then of layer 1 on the rows cut 1 kept, at their original positions, bidirectional."""
    lm, S = model.language_model, embeds.shape[1]
    prompt = S - 571
    k_attn = (25, 19) if precise else (16, 12)
    static = [1 + 256 * i + j for i in range(2)
              for j in reference_static(frames[i], previous[i], k_static, threshold)]
    positions = torch.arange(S)[None]
    attn0 = head_mean(eager_attention(lm, 0, embeds, positions, torch.zeros(1, 1, S, S)))
    kept1, all_retain, a0 = reference_cut1(attn0, prompt, static, k_attn)
    hidden = lm.run_layers(embeds, positions, attention_mask=bidirectional_mask(S, embeds.device), stop=1)[:, kept1]
    n = len(kept1)
    attn1 = head_mean(eager_attention(lm, 1, hidden, torch.from_numpy(kept1)[None], torch.zeros(1, 1, n, n)))
    kept2 = reference_cut2(attn1, kept1, all_retain, prompt, static, a0, k_attn, behaviour)
    visual = lambda p: [int(x) for x in p if 1 <= x < 513]  # noqa: E731
    return visual(kept1), visual(kept2)


def reference_run(model, queries, velocity_threshold=0.4, k_coarse=192, **options):
    modes, _ = reference_controller(CHUNKS + [CHUNKS[-1]], 8 * QUERIES, replan=False,
                                    velocity_threshold=velocity_threshold)
    frames = frame_chain()
    out = []
    for q in range(QUERIES):
        precise = modes[q][0]
        k = min(256, round(1.1 * k_coarse)) if precise else k_coarse
        out.append(reference_query(model, queries[q % len(queries)], frames[q], frames[max(q - 1, 0)], precise, k,
                                   **options))
    return out, [m[0] for m in modes[:QUERIES]]


@pytest.fixture(scope="module")
def recorded(fixture, queries):
    """The pruner's record: per query, the absolute visual positions kept after each cut, and its modes."""
    engine = engine_for(fixture[0], "specprune", KEEP)
    frames, out, modes = frame_chain(), [], []
    with torch.inference_mode():
        for q in range(QUERIES):
            engine.pruner.begin_query(QueryContext(np.zeros(8), CHUNKS[q - 1] if q else None))
            modes.append(engine.pruner.mode.precise)
            embeds = queries[q % len(queries)]
            state = engine.prefill(embeds, sequence_layout(embeds.shape[1]), frames=[frames[q]])
            engine.finish(state)
            first, second = state.trace.selections
            kept1 = [k for k in first.kept]
            kept2 = [before[k] for before, k in zip(kept1, second.kept)]
            out.append(tuple([1 + 256 * i + int(j) for i, k in enumerate(kept) for j in k] for kept in (kept1, kept2)))
    return out, modes


@pytest.fixture(scope="module")
def reference(fixture, queries):
    return reference_run(fixture[0], queries)


def test_kept_tokens_after_each_cut_equal_the_reference(recorded, reference):
    (kept, modes), (expected, expected_modes) = recorded, reference
    assert modes == expected_modes == [False, False, True, False, True, True]  # slow -> precise, rising -> coarse
    assert [k[0] for k in kept] == [e[0] for e in expected]
    assert [k[1] for k in kept] == [e[1] for e in expected]
    assert len(kept[0][1]) == 512 and any(len(k[1]) < 512 - 100 for k in kept)  # query 0 dense, later ones cut


@pytest.mark.parametrize("changed", ["velocity", "static_k", "a1_mapping", "threshold"])
def test_a_changed_reference_constant_disagrees(fixture, queries, recorded, changed):
    options = {"velocity": {"velocity_threshold": 0.5}, "static_k": {"k_coarse": 60},
               "a1_mapping": {"behaviour": "intended"}, "threshold": {"threshold": 0.5}}[changed]
    expected, modes = reference_run(fixture[0], queries, **options)
    assert ([k for k in recorded[0]], recorded[1]) != (expected, modes)
