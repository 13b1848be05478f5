"""Gated VLA-Cache (`pruner=gated_vla_cache`) on the engine, on the fixture checkpoints: the action logits the engine
keeps are the rows the released code reads (OpenVLA's 7 decode steps; OpenVLA-OFT's rows under both offsets, checked
with the separate reference transcription of tests/test_gated_vla_cache.py), the gate follows the reference's
one-shot rule on the engine's own margins, a gated query is the dense model's bit for bit, and with the gate at 0 the
method is VLA-Cache query for query."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from baselines.gated_vla_cache import MODEL_DEFAULTS, OFT_ROWS_AFTER_PROMPT
from evaluate.config import pruner_tag
from vla_pruner.engine import PruningEngine
from vla_pruner.pruning import build_pruner

from tests.conftest import composed
from tests.test_engine import dense_reference
from tests.test_engine_batch import oft, oft_query  # noqa: F401 (fixture: one prompt, the 4 reference cases' inputs)
from tests.test_gated_vla_cache import reference_gated, reference_margin, reference_rows
from tests.test_vla_cache import all_reused, one_thread, openvla, run_query  # noqa: F401 (fixtures)

THRESHOLD = 2.1e-6  # OFT: between the margins of the fixture episode below (2.0e-6 to 4.6e-6), so some queries gate
OPENVLA_OPTIONS = {"attention_layer": 7}  # the layer the fixture's VLA-Cache reference uses


def gated_engine(model, threshold, keep=0.25, **options) -> PruningEngine:
    return PruningEngine(model.language_model, build_pruner(
        {"name": "gated_vla_cache", "margin_threshold": threshold, **options}, keep, model.model_layout))


def gate_record(state) -> dict:
    return state.trace.selections[0].extra


def oft_chunk(oft, engine, case: int):
    """One OFT query of an episode on the fixture's case `case` (the model's own engine's pruner): chunk, state."""
    outputs, state = oft_query(oft, engine, case, [0], None if engine.pruner.name == "none" else [engine.pruner])
    return outputs["chunk"], state


def test_openvla_gate_reads_the_seven_action_logits_and_a_gated_query_is_dense(openvla, one_thread):
    """Threshold 2 (every margin is below it): the kept logits are the prefill's last row and the 6 decode steps'
    (what emitted the 7 action tokens), the margin is the reference's on them, and every query after the first
    reuses nothing and equals the dense model bit for bit. Threshold 0: VLA-Cache query for query."""
    model, reference, embeds = openvla
    engine = gated_engine(model, 2.0, **OPENVLA_OPTIONS)
    for t, (frame, query) in enumerate(zip(reference["frames"][:4], embeds[:4])):
        steps = []
        logits, tokens, state = run_query(model, engine, query, frame, steps)
        kept = engine.pruner.stored  # (stored_query() is None now: the next query is gated)
        assert torch.equal(kept.logits, torch.stack([logits[0, -1], *steps]).float()) and kept.decode_steps == 6
        assert engine.pruner.margin == pytest.approx(reference_margin(kept.logits.numpy()), abs=1e-6)
        assert gate_record(state)["gated"] == (t > 0)
        if t:
            dense_logits, dense_tokens = dense_reference(model, query)
            assert torch.equal(logits, dense_logits) and torch.equal(tokens, dense_tokens)
            assert state.trace.to_record()["reused_visual"] == 0
    ungated, plain = gated_engine(model, 0.0, **OPENVLA_OPTIONS), PruningEngine(
        model.language_model, build_pruner({"name": "vla_cache", **OPENVLA_OPTIONS}, 0.25, model.model_layout))
    reused = []
    for frame, query in zip(reference["frames"][:4], embeds[:4]):
        (_, ours, ours_state), (_, theirs, theirs_state) = (run_query(model, e, query, frame) for e in (ungated, plain))
        assert torch.equal(ours, theirs) and not gate_record(ours_state)["gated"]
        assert ours_state.trace.reused_mask == theirs_state.trace.reused_mask
        reused.append(ours_state.trace.to_record()["reused_visual"])
    assert reused[0] == 0 and sum(reused) > 0  # (frame 3 of the fixture has no static patch left to reuse)


def test_released_behaviour_runs_a_gated_query_as_a_first_query(openvla, one_thread):
    """`behaviour: released`: a gated query gets a fresh store, so it is what the released code's first query is (a
    bidirectional prefill, decode steps at the normal positions), not a reusing query's position-0 decode."""
    model, reference, embeds = openvla
    options = {**OPENVLA_OPTIONS, "behaviour": "released", "candidates": 130}
    engine = gated_engine(model, 2.0, keep=1.0, **options)
    run_query(model, engine, embeds[0], reference["frames"][0])
    logits, tokens, state = run_query(model, engine, embeds[1], reference["frames"][1])
    fresh = gated_engine(model, 2.0, keep=1.0, **options)
    first_logits, first_tokens, _ = run_query(model, fresh, embeds[1], reference["frames"][1])
    assert gate_record(state)["gated"] and torch.equal(tokens, first_tokens) and torch.equal(logits, first_logits)


def oft_margin_reference(model, state, reused: int, offset: str) -> float | None:
    """The margin the released code computes for an OFT query: LM-head logits of the final hidden states (computed
    here from the engine's last rows), the rows `reference_rows` names, the reference softmax."""
    seq_len = state.layout.length
    with torch.inference_mode():
        tail = model.language_model.logits(state.last_rows(OFT_ROWS_AFTER_PROMPT))[0].numpy()
    rows = [r - (seq_len - OFT_ROWS_AFTER_PROMPT) for r in reference_rows(seq_len, reused, offset)]
    return reference_margin(tail[rows])


# the paper offset at keep 0.9: 26 candidates per image, so a query reuses r <= 52 < 58 rows and its slice is shifted,
# not empty (the empty slice has its own test below)
@pytest.mark.parametrize("offset, keep", [("end", 0.25), ("paper", 0.9)])
def test_oft_gate_follows_the_reference_on_its_own_margins(oft, offset, keep, one_thread):
    """An OFT episode of 8 queries at a threshold between the fixture's margins (1.7e-6 and 2.2e-6: the fixture's
    token head is near uniform on these rows): each margin is the reference's on the rows the offset names, with r =
    the rows this query reused; which queries are gated is the reference's rule on those margins; a gated query's
    chunk is the dense model's and reuses nothing."""
    model = oft[0]
    dense = [oft_chunk(oft, model.dense_engine(), case)[0] for case in range(4)]
    engine = gated_engine(model, THRESHOLD, keep=keep, eviction_top_k=100, offset=offset)
    margins, gated, reused_rows = [], [], []
    for t in range(8):
        chunk, state = oft_chunk(oft, engine, t % 4)
        reused = state.trace.to_record()["reused_visual"]
        assert reused == engine.pruner.reused_rows()
        expected = oft_margin_reference(model, state, reused, offset)
        assert engine.pruner.margin == (None if expected is None else pytest.approx(expected, rel=1e-4))
        if offset == "paper" and reused:  # the shifted rows: another margin than the end offset's
            assert expected != pytest.approx(oft_margin_reference(model, state, reused, "end"), rel=1e-3)
        margins.append(expected)
        reused_rows.append(reused)
        gated.append(gate_record(state)["gated"])
        if gated[-1]:
            assert reused == 0 and torch.equal(chunk, dense[t % 4])
    assert gated == reference_gated(margins, THRESHOLD) and True in gated and False in gated[1:]
    assert max(reused_rows) > 0 and (offset == "end" or max(reused_rows) < OFT_ROWS_AFTER_PROMPT)


def test_oft_paper_offset_reads_past_the_actions_and_never_gates_when_its_slice_is_empty(oft, monkeypatch, one_thread):
    """Everything reused (r = 512 >= 58): the paper's slice of the shortened sequence is empty, its margin None, so
    even a threshold of 2 does not gate the next query; the `end` offset reads the same 56 rows whatever r is."""
    model = oft[0]
    all_reused(monkeypatch)
    results = {}
    for offset in ("end", "paper"):
        engine = gated_engine(model, 0.0, candidates=256, eviction_top_k=0, offset=offset)
        oft_chunk(oft, engine, 0)
        _, state = oft_chunk(oft, engine, 0)
        assert state.trace.to_record()["reused_visual"] == 512
        results[offset] = engine.pruner.margin
        assert results[offset] == (None if offset == "paper" else
                                   pytest.approx(oft_margin_reference(model, state, 512, "end"), rel=1e-4))
        engine.pruner.gate.threshold = 2.0
        engine.pruner.gate.observe(engine.pruner.margin)
        _, state = oft_chunk(oft, engine, 0)
        assert gate_record(state)["gated"] == (offset == "end")
    assert np.isfinite(results["end"])


@pytest.mark.parametrize("model, threshold, eviction", [("openvla_tiny", 0.65, 120), ("openvla_oft_tiny", 0.50, 100),
                                                        ("openvla_oft_small", 0.50, 100)])
def test_the_released_settings_follow_the_model_and_name_the_run(model, threshold, eviction):
    """`pruner=gated_vla_cache` composes the released threshold and VLA-Cache's eviction of the model's family
    (`MODEL_DEFAULTS`), and its run is named by the group file alone unless an option changes."""
    cfg = composed(f"model={model}", "pruner=gated_vla_cache", "keep=0.25")
    pruner = OmegaConf.to_container(cfg.pruner, resolve=True)
    assert (pruner["margin_threshold"], pruner["eviction_top_k"]) == (threshold, eviction)
    released = MODEL_DEFAULTS["openvla" if model == "openvla_tiny" else "openvla_oft"]
    assert (released.margin_threshold, released.eviction_top_k) == (threshold, eviction)
    assert pruner_tag(pruner, cfg.model.family, cfg.model.name) == "gated_vla_cache"
    changed = {**pruner, "offset": "paper", "margin_threshold": None}
    assert pruner_tag(changed, cfg.model.family, cfg.model.name) == "gated_vla_cache,margin_threshold=None,offset=paper"
