"""The `vla_adp` pruner on the OpenVLA-OFT fixture checkpoint, over a recorded sequence of queries (the fixture's
LLM inputs, an end-effector trajectory): which tokens each query keeps, against the separate transcription of the
official code in tests/test_vla_adp.py (its layer-0 q.k importance from the checkpoint's own weights, its per-camera
top-k, its motion gate); and that changing one of the reference's constants makes them disagree. keep=1.0 = dense
and dropping = masking are in the loops over pruners (test_engine.py, test_openvla_oft_model.py)."""
import numpy as np
import pytest
import torch

from baselines.vla_adp import VLAADP
from evaluate.config import ConfigError
from evaluate.policies.pi0 import ADAPTER as PI0
from vla_pruner.pruning import ModelLayout, QueryContext
from vla_pruner.models.openvla_oft.model import sequence_layout
from tests.test_openvla_oft_model import engine_for, fixture, queries  # noqa: F401 (fixtures)
from tests.test_vla_adp import chunked_trajectory, reference_gate, reference_importance, reference_select

KEEP = 0.25
# chunk displacements (x 2^-10 m per step) whose README-config gate gives dense, pruned and forced-dense queries
SPEEDS = [5, 5, 5, 6, 7, 1, 2, 3, 4, 5, 6]


def reference_rows(length: int) -> list[int]:
    """The official score's query rows in an OFT sequence (spec notation: BOS | 512 visual | proprio 513 | prompt
    514.. | 56 placeholders | </s>): BOS, every prompt token incl. 29871, and </s>."""
    return [0, *range(514, length - 57), length - 1]


def reference_kept(model, embeds, keep=KEEP, split=(0.4, 0.6), rows=reference_rows) -> list[list[int]]:
    """Per camera, the kept tokens of a pruned query: layer 0's RMSNorm, q_proj, k_proj of the checkpoint in
    float64, the reference importance and its per-camera top-k."""
    layer = model.language_model.layers[0]
    attention = layer.self_attn
    x = embeds[0].double().numpy()
    weights = [t.detach().double().numpy() for t in (layer.input_layernorm.weight, attention.q_proj.weight,
                                                      attention.k_proj.weight)]
    heads = attention.q_proj.weight.shape[0] // attention.head_dim
    importance = reference_importance(x[rows(x.shape[0])], x[1:513], weights[0],
                                      layer.input_layernorm.variance_epsilon, weights[1], weights[2], heads,
                                      attention.head_dim)
    return reference_select(importance, keep, split)


@pytest.fixture(scope="module")
def recorded(fixture, queries):
    """The pruner's record over the trajectory: per query, the kept tokens of each camera (all of them when the
    gate ran the query dense)."""
    engine = engine_for(fixture[0], "vla_adp", KEEP)
    positions = chunked_trajectory(SPEEDS)
    kept = []
    with torch.inference_mode():
        for q in range(len(SPEEDS)):
            state = np.concatenate([positions[8 * q], np.zeros(5)])  # LIBERO's state: eef position first
            engine.pruner.begin_query(QueryContext(robot_state=state))
            embeds = queries[q % len(queries)]
            query = engine.prefill(embeds, sequence_layout(embeds.shape[1]))
            engine.finish(query)
            [selection] = query.trace.selections
            kept.append([k.tolist() for k in selection.kept])
    return kept


def expected(model, queries, gate_states, split=(0.4, 0.6), rows=reference_rows) -> list[list[list[int]]]:
    return [reference_kept(model, queries[q % len(queries)], split=split, rows=rows) if pruned
            else [list(range(256)), list(range(256))] for q, pruned in enumerate(gate_states)]


def test_kept_tokens_equal_the_reference_at_every_query(fixture, queries, recorded):
    states = reference_gate(chunked_trajectory(SPEEDS))
    assert states == [0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0]  # dense start, pruned, a new minimum, the streak limit
    assert recorded == expected(fixture[0], queries, states)
    assert [len(k) for k in recorded[3]] == [51, 77]  # round(512 x 0.25) = 128 split 0.4 / 0.6


@pytest.mark.parametrize("changed", ["split", "streak_limit", "extrema_window", "rows"])
def test_a_changed_reference_constant_disagrees(fixture, queries, recorded, changed):
    model, positions = fixture[0], chunked_trajectory(SPEEDS)
    if changed == "split":
        reference = expected(model, queries, reference_gate(positions), split=(0.5, 0.5))
    elif changed == "streak_limit":
        reference = expected(model, queries, reference_gate(positions, limit=2))
    elif changed == "extrema_window":
        reference = expected(model, queries, reference_gate(positions, window=4))
    else:  # the score's rows without </s> (the harness's "text" rows plus BOS)
        reference = expected(model, queries, reference_gate(positions), rows=lambda n: reference_rows(n)[:-1])
    assert recorded != reference


def test_pi0_refuses_it_in_one_line_and_one_image_ranks_jointly():
    with pytest.raises(ConfigError, match="vla_adp.*cannot run on pi0"):
        PI0.pruner({"name": "vla_adp"}, 0.25, ModelLayout(18, (256, 256)))
    openvla = VLAADP(VLAADP.Config(), 0.25, ModelLayout(32, (256,)))
    assert openvla.budgets == (64,) and openvla.joint
    with pytest.raises(ValueError, match="one weight per image"):
        VLAADP(VLAADP.Config(split=(0.2, 0.3, 0.5)), 0.25, ModelLayout(32, (256, 256)))
