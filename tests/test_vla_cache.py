"""VLA-Cache (`pruner=vla_cache`) on the engine's KV-reuse path: against the dense model (no reuse; identical frames
with everything reused), against the carried keys/values themselves, against what VLA-Cache's released code computed
on the fixture checkpoint over 6 real LIBERO frames (`behaviour: released`), on OpenVLA-OFT, and batched."""
import numpy as np
import pytest
import torch
from PIL import Image

import baselines.vla_cache as vla_cache
from vla_pruner.engine import PruningEngine
from vla_pruner.models.openvla.model import ACTION_DIM, OpenVLA, with_empty_token
from vla_pruner.models.openvla_oft.model import READOUT_ROWS, OpenVLAOFT
from vla_pruner.pruning import build_pruner

from tests.references import fixture_checkpoint
from tests.test_engine import dense_reference

# Logits tolerance against the released code's outputs. Our dense bidirectional pass alone is 1.7e-5 from the
# reference's dense pass on the same weights (float32 sums in another order; logits are about 50 in size), and the
# cache run measured 2.3e-5 at most: 1e-4 leaves room for other BLAS builds while a wrong position, mask or carried
# key moves logits by 1e-2 or more (decode at the right positions: 0.47; a causal prefill: 1.7).
LOGITS_ATOL = 1e-4
# The per-layer reuse fractions of frames 4 and 5 differ from the reference's by up to 0.0053 (layers 3-5; frames
# 1-3 agree to float32 precision): the reference rebuilt the released transformers fork from public copies (fixture
# README). The counts they give, and every recomputed/reused position, are exact.
FRACTIONS_ATOL = 0.01


@pytest.fixture(scope="module")
def openvla(fixtures_dir):
    """The fixture checkpoint, the VLA-Cache reference and each reference frame's prefill embeddings."""
    model, processor, reference = fixture_checkpoint(fixtures_dir, OpenVLA, "openvla_tiny_hf",
                                                     "vla_cache_tiny_reference.npz")
    with torch.inference_mode():
        embeds = []
        for frame in reference["frames"]:
            inputs = processor(str(reference["prompt"]), Image.fromarray(frame))
            embeds.append(model.multimodal_embeds(with_empty_token(inputs["input_ids"]),
                                                  model.encode_image(inputs["pixel_values"])))
    return model, reference, embeds


def cache_engine(model, keep=0.5, **options) -> PruningEngine:
    return PruningEngine(model.language_model,
                         build_pruner({"name": "vla_cache", **options}, keep, model.model_layout))


@torch.inference_mode()
def run_query(model, engine, embeds, frame, step_logits=None):
    """One OpenVLA query through the engine: (first-token logits, 7 tokens, state); `step_logits` collects each
    step's logits."""
    state = engine.prefill(embeds, model.sequence_layout(embeds.shape[1]), frames=[[frame]])
    logits = model.language_model.logits(state.last_rows(1))
    lm, plain = model.language_model, model.language_model.logits
    if step_logits is not None:
        def capture(hidden):
            out = plain(hidden)
            step_logits.append(out[0, -1].clone())
            return out
        lm.logits = capture
    try:
        tokens = engine.decode(state, ACTION_DIM)
    finally:
        lm.__dict__.pop("logits", None)
    engine.finish(state)
    return logits, tokens, state


@pytest.fixture
def one_thread():
    """For bit-for-bit comparisons of passes that compute different numbers of rows: a multi-threaded GEMM may
    split its work by the row count, which reorders a row's float additions (seen on a 2-core EPYC: 5e-7 in OFT's
    actions); on one thread every row gets the same arithmetic whatever the row count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def all_reused(monkeypatch):
    """Every reuse layer reuses all reusable tokens (reuse fraction 1 at every layer)."""
    monkeypatch.setattr(vla_cache, "reuse_fractions", lambda entropy, growth: [1.0] * len(entropy))


def test_no_reuse_equals_dense(openvla):
    """Nothing reusable (every token is among the most attended): every query is the dense model's, bit for bit,
    the first one included, and the store still fills."""
    model, reference, embeds = openvla
    engine = cache_engine(model, eviction_top_k=256)
    for frame, query in zip(reference["frames"][:3], embeds[:3]):
        logits, tokens, state = run_query(model, engine, query, frame)
        dense_logits, dense_tokens = dense_reference(model, query)
        assert torch.equal(logits, dense_logits) and torch.equal(tokens, dense_tokens)
        assert state.trace.kept_visual == 256 and state.trace.to_record()["reused_visual"] == 0
    assert engine.pruner.stored_query() is not None and len(engine.pruner.static[0]) == 128


def test_identical_frames_with_everything_reused_equal_dense(openvla, monkeypatch, one_thread):
    """The same frame twice, every visual token reused from layer 2: the second query is the dense model's (its
    text rows attend to the carried keys/values, which are the ones a recomputation gives)."""
    model, reference, embeds = openvla
    all_reused(monkeypatch)
    engine = cache_engine(model, candidates=256, eviction_top_k=0)
    frame, query = reference["frames"][0], embeds[0]
    run_query(model, engine, query, frame)
    logits, tokens, state = run_query(model, engine, query, frame)
    S = query.shape[1]
    assert state.trace.prefill_tokens == [S, S] + [S - 256] * 6 and state.trace.prefill_keys == [S] * 8
    dense_logits, dense_tokens = dense_reference(model, query)
    assert torch.equal(tokens, dense_tokens) and torch.equal(logits, dense_logits)


def test_a_reused_token_keeps_the_previous_querys_keys_and_values(openvla, monkeypatch):
    model, reference, embeds = openvla
    all_reused(monkeypatch)
    engine = cache_engine(model, keep=0.25)
    run_query(model, engine, embeds[0], reference["frames"][0])
    before = engine.pruner.stored_query()
    _, _, state = run_query(model, engine, embeds[1], reference["frames"][1])
    after = engine.pruner.stored_query()
    reused = 1 + torch.cat(engine.pruner.reusable)  # sequence positions
    recomputed = torch.tensor([p for p in range(1, 257) if p not in set(reused.tolist())])
    assert 0 < len(reused) <= 192 and state.trace.to_record()["reused_visual"] == len(reused)
    for layer in range(8):
        for part in ("keys", "values"):
            old, new = getattr(before, part)[layer], getattr(after, part)[layer]
            if layer >= 2:  # reused from layer 2 on: the previous query's, at the same positions
                assert torch.equal(new[:, reused], old[:, reused])
            else:  # layers 0 and 1 recompute every token
                assert not torch.equal(new[:, reused], old[:, reused])
            assert not torch.equal(new[:, recomputed], old[:, recomputed])


def test_released_behaviour_reproduces_the_reference(openvla):
    """`behaviour: released` against VLA-Cache's released code on the fixture (eviction attention from layer 7,
    130 candidates, as the reference ran): static patches, eviction, reusable positions, the recomputed and reused
    positions of every layer exactly; reuse fractions, attention, logits of every step to the tolerances above."""
    model, reference, embeds = openvla
    engine = cache_engine(model, keep=1.0, behaviour="released", attention_layer=7, candidates=130)
    pruner = engine.pruner
    for t, (frame, query) in enumerate(zip(reference["frames"], embeds)):
        ref = lambda key: reference[f"cache_f{t}_{key}"]  # noqa: E731
        previous = pruner.stored_query()
        if previous is not None:
            attended = vla_cache.top_k(previous.text_attention[0], 120)
            np.testing.assert_allclose(previous.text_attention[0], ref("text_to_vision_attn"), atol=1e-6, rtol=0)
            assert sorted(attended.tolist()) == sorted(ref("top_attn_patches").tolist())
            np.testing.assert_allclose(vla_cache.reuse_fractions(previous.entropy, 0.55),
                                       ref("proportion_attn_var"), atol=FRACTIONS_ATOL, rtol=0)
        steps = []
        logits, tokens, state = run_query(model, engine, query, frame, steps)
        if t:
            assert sorted(pruner.static[0].tolist()) == sorted(ref("static_patches").tolist())
            assert (1 + pruner.reusable[0]).tolist() == ref("reusable_positions").tolist()
        [group] = state.groups
        for layer, rows in enumerate(group.layer_tokens):
            positions = rows[0].position
            assert positions.tolist() == ref(f"L{layer}_recomputed_positions").tolist(), (t, layer)
            reused = sorted(set(range(1, 257)) - set(positions.tolist()))
            assert reused == ref(f"L{layer}_reused_positions").tolist(), (t, layer)
        assert tokens[0].tolist() == ref("action_token_ids").tolist()
        np.testing.assert_allclose(logits[0, -1], ref("last_logits"), atol=LOGITS_ATOL, rtol=0)
        np.testing.assert_allclose(torch.stack([logits[0, -1], *steps]), ref("step_logits"), atol=LOGITS_ATOL, rtol=0)
    assert state.trace.to_record()["reused_visual"] == 6


def test_paper_behaviour_decodes_at_the_right_positions(openvla):
    """The default differs from the released code exactly where the spec says: a causal prefill and decode steps
    at positions S, S+1, ...: on the first (dense) query it is the causal dense model."""
    model, reference, embeds = openvla
    engine = cache_engine(model, keep=1.0, attention_layer=7, candidates=130)
    logits, tokens, _ = run_query(model, engine, embeds[0], reference["frames"][0])
    dense_logits, dense_tokens = dense_reference(model, embeds[0])
    assert torch.equal(logits, dense_logits) and torch.equal(tokens, dense_tokens)
    assert np.abs(logits[0, -1].numpy() - reference["cache_f0_last_logits"]).max() > 0.1  # not bidirectional


@pytest.fixture(scope="module")
def oft(fixtures_dir):
    model, processor, reference = fixture_checkpoint(fixtures_dir, OpenVLAOFT, "openvla_oft_tiny_hf",
                                                     "openvla_oft_tiny_hf_reference.npz")
    queries = []
    with torch.inference_mode():
        for i in range(len(reference["prompt"])):
            frames = [reference["primary"][i], reference["wrist"][i]]
            inputs = processor(str(reference["prompt"][i]), Image.fromarray(frames[0]))
            pixels = torch.cat([inputs["pixel_values"], processor.image_processor(Image.fromarray(frames[1]))], 1)
            embeds = model.multimodal_embeds(inputs["input_ids"], model.encode_images(pixels),
                                             model.project_proprio(reference["proprio_norm"][i]))
            queries.append((embeds, frames))
    return model, queries


@torch.inference_mode()
def oft_chunk(model, engine, embeds, frames):
    state = model.run_llm(embeds, engine, frames=[frames])
    return model.action_chunk(state.last_rows(READOUT_ROWS)), state


def test_openvla_oft_reuses_both_images_bidirectionally(oft, monkeypatch, one_thread):
    """OFT (bidirectional): no reuse = dense; the same query twice with everything reused = dense; real
    consecutive frames reuse tokens of both images, each image against its own previous frame."""
    model, queries = oft
    dense = [oft_chunk(model, model.dense_engine(), *q)[0] for q in queries[:2]]
    engine = cache_engine(model, eviction_top_k=256)
    for query, expected in zip(queries[:2], dense):
        assert torch.equal(oft_chunk(model, engine, *query)[0], expected)
    all_reused(monkeypatch)
    engine = cache_engine(model, candidates=256, eviction_top_k=0)
    oft_chunk(model, engine, *queries[0])
    chunk, state = oft_chunk(model, engine, *queries[0])
    assert state.trace.to_record()["reused_visual"] == 512
    assert torch.equal(chunk, dense[0])
    engine = cache_engine(model, keep=0.25, eviction_top_k=100)
    oft_chunk(model, engine, *queries[0])
    chunk, state = oft_chunk(model, engine, *queries[1])
    counts = [len(r) for r in engine.pruner.reusable]
    assert min(counts) > 0 and max(counts) <= 192 and torch.isfinite(chunk).all()
    assert state.trace.to_record()["reused_visual"] == sum(counts)


def test_batched_queries_equal_batch_one(openvla):
    """Three episodes at once, each with its own pruner and frames (one starting its episode late, so a dense
    query beside reusing ones): tokens, logits, reused tokens and stored keys equal batch-1 runs of twin pruners."""
    model, reference, embeds = openvla
    config = {"name": "vla_cache", "attention_layer": 7}
    twins = [[build_pruner(config, 0.25, model.model_layout) for _ in range(3)] for _ in range(2)]
    engine = PruningEngine(model.language_model, build_pruner(config, 0.25, model.model_layout))
    frames = [[0, 1, 2, 3], [1, 2, 3, 4], [5, 5, 0, 1]]  # sample 2: a still frame, then a jump
    for query in range(4):
        if query == 2:  # sample 1 starts a new episode
            for pruner in (twins[0][1], twins[1][1]):
                pruner.reset(seed=7, episode=1)
        index = [f[query] for f in frames]
        batch = torch.cat([embeds[i] for i in index])
        with torch.inference_mode():
            state = engine.prefill(batch, model.sequence_layout(batch.shape[1]), twins[0],
                                   [[reference["frames"][i]] for i in index])
            first = model.language_model.logits(state.last_rows(1))
            tokens = engine.decode(state, ACTION_DIM)
            engine.finish(state)
        for sample, i in enumerate(index):
            logits, alone, alone_state = run_query(model, PruningEngine(model.language_model, twins[1][sample]),
                                                   embeds[i], reference["frames"][i])
            assert torch.equal(tokens[sample:sample + 1], alone)
            torch.testing.assert_close(first[sample:sample + 1], logits, atol=1e-5, rtol=1e-6)
            assert state.traces[sample].to_record()["reused_mask"] == alone_state.trace.to_record()["reused_mask"]
            assert state.traces[sample].prefill_tokens == alone_state.trace.prefill_tokens
            ours, theirs = twins[0][sample].stored_query(), twins[1][sample].stored_query()
            torch.testing.assert_close(ours.keys[5], theirs.keys[5], atol=1e-5, rtol=1e-5)
        if query == 3:
            assert len({t.kept_visual for t in state.traces}) > 1  # the samples ran in different groups


@pytest.mark.parametrize("options, message", [
    ({"behaviour": "as_released"}, "behaviour='as_released' is not valid"),
    ({"reuse_layers": [9, 11]}, "none below the model's 8 layers"),
    ({"reuse_layers": [0, 2]}, "must be increasing layers >= 1"),
    ({"candidates": 300}, "candidates=300 exceeds the 256 visual tokens"),
    ({"attention_layer": 8}, "attention_layer=8 must be in 0..7"),
    ({"threshold": 1.5}, "threshold=1.5 must be a cosine similarity"),
])
def test_bad_options_are_refused(options, message):
    from vla_pruner.pruning import ModelLayout

    with pytest.raises(ValueError, match=message):
        build_pruner({"name": "vla_cache", **options}, 0.5, ModelLayout(8, (256,)))


def test_budget_mapping_and_layer_scaling():
    from vla_pruner.pruning import ModelLayout

    for keep, candidates in ((0.5, 128), (0.25, 192), (0.125, 224), (1.0, 0)):
        pruner = build_pruner({"name": "vla_cache"}, keep, ModelLayout(32, (256, 256)))
        assert pruner.candidates == (candidates, candidates)
        assert bool(pruner.plan.stages) == (keep < 1.0)
    pruner = build_pruner({"name": "vla_cache"}, 0.5, ModelLayout(32, (256,)))
    assert [s.layer for s in pruner.plan.stages] == [1, 5, 8, 10] and pruner.plan.reuse.attention_layer == 15
    tiny = build_pruner({"name": "vla_cache"}, 0.5, ModelLayout(8, (256,)))
    assert [s.layer for s in tiny.plan.stages] == [1, 5] and tiny.plan.reuse.attention_layer == 4
    assert build_pruner({"name": "vla_cache", "candidates": 10}, 1.0, ModelLayout(8, (256,))).plan.stages


def test_no_host_sync_inside_the_layers(openvla, monkeypatch):
    """A reusing query's layers (the KV merge, the entropy and text-attention probes) never make the host wait for
    the device; neither do its decode steps. Host work is once per stage (the selection), not per layer."""
    from tests.test_engine import HostSyncs

    model, reference, embeds = openvla
    all_reused(monkeypatch)
    engine = cache_engine(model, keep=0.25)
    run_query(model, engine, embeds[0], reference["frames"][0])
    inside = []
    hooks = [h for layer in model.language_model.layers
             for h in (layer.register_forward_pre_hook(lambda *_: inside.append(True)),
                       layer.register_forward_hook(lambda *_: inside.clear()))]

    class InLayers(HostSyncs):
        SYNCING = HostSyncs.SYNCING | {"aten::item"}  # what a Python float() of a tensor dispatches on a CPU

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if inside and func._schema.name in self.SYNCING:
                self.ops.append(func._schema.name)
            return func(*args, **(kwargs or {}))

    try:
        with InLayers() as syncs, torch.inference_mode():
            state = engine.prefill(embeds[1], model.sequence_layout(embeds[1].shape[1]),
                                   frames=[[reference["frames"][1]]])
            engine.decode(state, ACTION_DIM)
    finally:
        for hook in hooks:
            hook.remove()
    assert state.trace.to_record()["reused_visual"] > 0 and syncs.ops == []


def test_flops_count_reused_tokens_as_keys_only(capsys):
    """`python -m evaluate.flops model=openvla pruner=vla_cache keep=0.25`: layers 0-1 run all 291 tokens, from
    layer 2 the 64 recomputed visual tokens and 35 others are queries against all 291 keys. The command is run in
    this process (it is `main(argv)` and nothing else; the process itself: tests/test_pi0_flops.py's CLI tests),
    not in two new interpreters importing torch and the harness."""
    from evaluate.analysis.flops import main
    from vla_pruner.macs import layer_macs, prefill_macs

    assert layer_macs(2, 4, 3, keys=5) == 4 * 2 * 16 + 2 * 2 * 5 * 4 + 3 * 2 * 4 * 3
    main(["model=openvla", "pruner=vla_cache", "keep=0.25"])
    out = capsys.readouterr().out.splitlines()
    expected = prefill_macs([291] * 2 + [99] * 30, 4096, 11008, [291] * 32) / 1e12
    assert float(out[-1]) == pytest.approx(expected, rel=1e-5)
    assert "99 of 291 tokens are queries, all 291 are keys" in out[3]
    main(["model=openvla", "pruner=vla_cache", "pruner.candidates=130", "keep=1.0"])
    assert "161 of 291 tokens are queries" in capsys.readouterr().out  # explicit candidates, whatever keep says


@pytest.mark.parametrize("budget, keep, recomputed", [("joint", 0.25, 64), ("joint", 0.125, 32),
                                                      ("candidates", 0.25, 120), ("candidates", 0.5, 128)])
def test_the_analytic_count_is_a_query_the_rules_reach(monkeypatch, budget, keep, recomputed):
    """At the most reuse the rules allow (every candidate static, none of them evicted, r_l = 1), a query recomputes
    exactly the rows `describe()`'s stage counts (the FLOPs CLI's count) assume: keep x 256 with `budget: joint`,
    256 - min(candidates, 256 - 120) with the eviction fixed."""
    from vla_pruner.pruning import ModelLayout, QueryKV, StageInputs

    all_reused(monkeypatch)
    pruner = build_pruner({"name": "vla_cache", "budget": budget}, keep, ModelLayout(8, (256,)))
    assert pruner.describe()["stage_counts"] == [[recomputed] * 2]
    frame = np.full((224, 224, 3), 100, dtype=np.uint8)  # identical frames: every patch static, ties by index
    attention = torch.arange(256, dtype=torch.float32)  # the last tokens most attended: evicted, not candidates
    pruner.stored, pruner.previous_frames = QueryKV([], [], torch.zeros(8), [attention]), [frame]
    kept = [pruner.select(StageInputs(stage=stage, frames=[frame])).kept[0] for stage in (0, 1)]
    assert len(kept[0]) == len(kept[1]) == recomputed  # the second stage keeps all the first left as queries


def test_released_behaviour_reuses_at_least_one_token_per_reuse_layer():
    assert vla_cache.reused_counts([0.001, 0.001, 0.001], (1, 2), 100) == [0, 0]
    assert vla_cache.reused_counts([0.001, 0.001, 0.001], (1, 2), 100, minimum=1) == [1, 1]
    assert vla_cache.reused_counts([0.5, 0.5, 0.5], (1, 2), 0, minimum=1) == [0, 0]  # nothing reusable: none
