"""The pruning engine against references that keep every token: dense equality, masked-key equivalence,
exact attention rows. Uses the official-format fixture checkpoint (8 layers) on its real LIBERO frames."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from vla_pruner.engine import PruningEngine, attention_probs
from vla_pruner.layout import SequenceLayout
from vla_pruner.models.llama import KVCache, causal_padding_mask
from vla_pruner.models.openvla.model import with_empty_token
from vla_pruner.models.openvla.processor import OpenVLAProcessor
from vla_pruner.pruning import ModelLayout, QueryContext, build_pruner

from tests.references import eager_attention, openvla_fixture_queries

N_TOKENS = 7


@pytest.fixture(scope="module")
def model_and_inputs(fixtures_dir):
    return openvla_fixture_queries(fixtures_dir)


def layout_of(embeds) -> SequenceLayout:
    return SequenceLayout.openvla(embeds.shape[1])


def engine_for(model, name, keep, **options) -> PruningEngine:
    lm = model.language_model
    pruner = build_pruner({"name": name, **options}, keep, ModelLayout(len(lm.layers), (256,)))
    return PruningEngine(lm, pruner)


@torch.inference_mode()
def run_engine(engine: PruningEngine, embeds):
    engine.pruner.begin_query(QueryContext(robot_state=np.zeros(8)))  # what VLAPolicy tells it (VLA-ADP's gate)
    state = engine.prefill(embeds, layout_of(embeds))
    first_logits = engine.lm.logits(state.last_rows(1))
    assert torch.equal(first_logits.argmax(-1), state.next_token)
    tokens = engine.decode(state, N_TOKENS)
    engine.finish(state)
    return first_logits, tokens, state.trace


@torch.inference_mode()
def dense_reference(model, embeds, n_tokens=N_TOKENS):
    """The unpruned model written out with the layer loop alone: a full prefill, then greedy cached steps.
    Returns the first token's logits and the greedy tokens."""
    lm = model.language_model
    S = embeds.shape[1]
    cache = KVCache(len(lm.layers))
    logits = lm.logits(lm.run_layers(embeds, torch.arange(S)[None], cache)[:, -1:])
    tokens = [logits.argmax(-1)]
    for step in range(n_tokens - 1):
        hidden = lm.run_layers(lm.embed(tokens[-1]), torch.tensor([[S + step]]), cache)
        tokens.append(lm.logits(hidden).argmax(-1))
    return logits, torch.cat(tokens, 1)


@torch.inference_mode()
def masked_reference(model, embeds, kept_visual: torch.Tensor, prune_layer: int, decode_tokens: torch.Tensor,
                     renumber: bool = False):
    """All tokens stay; from layer K on, dropped visual tokens are hidden as keys (prefill and decode).
    `renumber` (K = 0 only): the kept rows at positions 0..n-1 and decoding from n, as a renumbering plan runs.
    Returns the first-token logits and the logits of each decode step fed with `decode_tokens`."""
    lm = model.language_model
    S = embeds.shape[1]
    layout = layout_of(embeds)
    key_ok = torch.ones(S, dtype=torch.bool)
    key_ok[layout.visual[0]] = False
    key_ok[layout.visual[0].start + kept_visual] = True
    prefill_mask = causal_padding_mask(key_ok[None].long())  # causal, dropped keys hidden (rows see self)
    positions = (torch.cumsum(key_ok, 0) - 1)[None] if renumber else torch.arange(S)[None]
    decode_start = int(key_ok.sum()) if renumber else S
    cache = KVCache(len(lm.layers))
    hidden = lm.run_layers(embeds, positions, cache, start=0, stop=prune_layer)
    hidden = lm.run_layers(hidden, positions, cache, prefill_mask, start=prune_layer, stop=len(lm.layers))
    logits = [lm.logits(hidden[:, -1:])]
    for step, token in enumerate(decode_tokens[0, :-1]):
        position = torch.tensor([[decode_start + step]])
        h = lm.run_layers(lm.embed(token.view(1, 1)), position, cache, start=0, stop=prune_layer)
        decode_mask = torch.cat([key_ok, torch.ones(step + 1, dtype=torch.bool)])[None, None, None]
        h = lm.run_layers(h, position, cache, decode_mask, start=prune_layer, stop=len(lm.layers))
        logits.append(lm.logits(h))
    return logits


@torch.inference_mode()
def test_none_and_keep_one_equal_the_unpruned_model(model_and_inputs):
    model, queries = model_and_inputs
    for embeds in queries:
        dense_logits, dense_tokens = dense_reference(model, embeds)
        for name in ("none", "vla", "fastv", "sparsevlm", "random", "divprune", "vla_cache", "gated_vla_cache", "vla_adp",
                     "specprune"):
            logits, tokens, trace = run_engine(engine_for(model, name, keep=1.0), embeds)
            assert torch.equal(tokens, dense_tokens), name
            assert trace.kept_visual == 256 and trace.prefill_tokens == [embeds.shape[1]] * 8
        logits, tokens, _ = run_engine(engine_for(model, "none", keep=0.25), embeds)
        assert torch.equal(logits, dense_logits) and torch.equal(tokens, dense_tokens)


@torch.inference_mode()
@pytest.mark.parametrize("name, options", [("fastv", {}), ("fastv", {"prune_layer": 5}), ("random", {}),
                                           ("sparsevlm", {}), ("vla", {"dense_warmup": 0}),
                                           ("divprune", {"prune_layer": 0}), ("divprune", {"prune_layer": 3}),
                                           ("vla_adp", {"gate": False})])
def test_token_dropping_equals_masked_keys(model_and_inputs, name, options):
    model, queries = model_and_inputs
    engine = engine_for(model, name, keep=0.25, **options)
    engine.pruner.reset(seed=7, episode=0)
    renumber = engine.pruner.plan.renumber_positions  # VLA-ADP: cut before layer 0, positions renumbered
    prune_layer = options.get("prune_layer", 0 if renumber else 3)
    for embeds in queries:
        logits, tokens, trace = run_engine(engine, embeds)
        [selection] = trace.selections
        kept = selection.kept[0]
        assert len(kept) == 64 and trace.kept_visual == 64
        S = embeds.shape[1]
        assert trace.prefill_tokens == [S] * prune_layer + [S - 192] * (8 - prune_layer)
        reference = masked_reference(model, embeds, kept, prune_layer, tokens, renumber)
        torch.testing.assert_close(logits, reference[0], atol=2e-5, rtol=1e-4)
        # every decoded token is the masked reference's greedy choice
        assert torch.equal(torch.cat([r.argmax(-1) for r in reference], 1), tokens)


@torch.inference_mode()
def test_decode_logits_equal_masked_reference(model_and_inputs):
    """Step-by-step logits of the engine's cached decode against the masked full computation."""
    model, queries = model_and_inputs
    engine = engine_for(model, "fastv", keep=0.125)
    lm = model.language_model
    embeds = queries[0]
    state = engine.prefill(embeds, layout_of(embeds))
    token = lm.logits(state.last_rows(1)).argmax(-1)
    tokens, step_logits = [token], []
    for step in range(N_TOKENS - 1):
        position = torch.full_like(token, embeds.shape[1] + step)
        h = lm.run_layers(lm.embed(tokens[-1]), position, state.groups[0].cache)
        step_logits.append(lm.logits(h))
        tokens.append(step_logits[-1].argmax(-1))
    reference = masked_reference(model, embeds, state.trace.selections[0].kept[0], 3, torch.cat(tokens, 1))
    for ours, theirs in zip(step_logits, reference[1:]):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_probed_attention_equals_eager_attention(model_and_inputs):
    """A probe sees the queries and keys the layer's SDPA uses; their probabilities are eager attention's."""
    model, queries = model_and_inputs
    lm = model.language_model
    embeds = queries[1]
    S = embeds.shape[1]
    positions = torch.arange(S)[None]
    cache = KVCache(len(lm.layers))
    layer_idx = 2
    layer_input = lm.run_layers(embeds, positions, cache, start=0, stop=layer_idx)
    seen = {}
    lm.run_layers(layer_input, positions, cache, start=layer_idx, stop=layer_idx + 1,
                  probes={layer_idx: lambda q, k, scaling: seen.update(q=q, k=k, scaling=scaling)})
    assert seen["k"].shape[-2] == S and torch.equal(seen["k"], cache.keys[layer_idx])
    mask = torch.zeros(1, 1, S, S).masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), float("-inf"))
    eager = eager_attention(lm, layer_idx, layer_input, positions, mask)
    rows = torch.tensor([0, 5, 100, S - 1])
    visible = rows[:, None] >= torch.arange(S)[None]
    ours = attention_probs(seen["q"][:, :, rows], seen["k"], seen["scaling"], visible)[0]
    torch.testing.assert_close(ours, eager[0].mean(0)[rows].float(), atol=1e-6, rtol=1e-5)


@torch.inference_mode()
def test_probes_change_no_output(model_and_inputs):
    """VLA-Pruner's warm-up queries run dense with every probe on (the stage's prefill rows, the action rows in
    prefill and decode): logits and tokens are the dense model's bit for bit."""
    model, queries = model_and_inputs
    engine = engine_for(model, "vla", keep=0.25)
    for embeds in queries[:3]:
        logits, tokens, trace = run_engine(engine, embeds)
        assert trace.selections[0].warmup
        dense_logits, dense_tokens = dense_reference(model, embeds)
        assert torch.equal(logits, dense_logits) and torch.equal(tokens, dense_tokens)


@torch.inference_mode()
def test_vla_pruner_warms_up_dense_then_prunes_with_action_history(model_and_inputs):
    model, queries = model_and_inputs
    engine = engine_for(model, "vla", keep=0.25)
    engine.pruner.reset(seed=7, episode=0)
    traces = [run_engine(engine, q)[2] for q in queries]
    assert [t.selections[0].warmup for t in traces] == [True, True, True, False]
    assert [t.kept_visual for t in traces] == [256, 256, 256, 64]
    history = engine.pruner.history
    assert len(history) == 3 and all(h[0].shape == (256,) for h in history)
    # a pruned query's action scores are zero exactly on the tokens it dropped
    pruned_scores = history[-1][0]
    kept = traces[-1].selections[0].kept[0]
    dropped = torch.ones(256, dtype=torch.bool)
    dropped[kept] = False
    assert torch.all(pruned_scores[dropped] == 0) and torch.all(pruned_scores[kept] > 0)
    # the action score is a mean of attention probabilities: the visual share of one unit of attention
    assert 0 < float(history[0][0].sum()) <= 1


@torch.inference_mode()
def test_progressive_sparsevlm_merges_tokens_at_their_origin_positions(model_and_inputs):
    model, queries = model_and_inputs
    engine = engine_for(model, "sparsevlm", keep=0.5, mode="progressive")
    embeds = queries[2]
    logits, tokens, trace = run_engine(engine, embeds)
    assert len(trace.selections) == len(engine.pruner.plan.stages) >= 2
    assert any(len(m.origin) for s in trace.selections for m in s.merged)
    S = embeds.shape[1]
    average_visual = sum(n - (S - 256) for n in trace.prefill_tokens) / 8
    assert abs(average_visual - 128) <= 1  # the layer-averaged visual count meets the budget
    assert torch.isfinite(logits).all() and tokens.shape == (1, N_TOKENS)


@torch.inference_mode()
def test_each_query_carries_its_own_state(model_and_inputs):
    """Two queries prefilled before either decodes give what each gives alone: nothing of a query is left on
    the engine."""
    model, queries = model_and_inputs
    engine = engine_for(model, "fastv", keep=0.25)
    alone = [run_engine(engine, q) for q in queries[:2]]
    states = [engine.prefill(q, layout_of(q)) for q in queries[:2]]
    for state, (_, tokens, trace) in zip(reversed(states), reversed(alone)):
        assert torch.equal(engine.decode(state, N_TOKENS), tokens)
        assert torch.equal(state.trace.selections[0].kept[0], trace.selections[0].kept[0])


@torch.inference_mode()
def test_the_plain_model_is_the_dense_engine_and_takes_batches(model_and_inputs, fixtures_dir):
    model, queries = model_and_inputs
    processor = OpenVLAProcessor.from_pretrained(fixtures_dir / "openvla_tiny_hf")
    reference = np.load(fixtures_dir / "openvla_tiny_hf_reference.npz")
    prompt = str(reference["prompt"][0])
    inputs = [processor(prompt, Image.fromarray(image)) for image in reference["image"][:2]]
    ids, pixels = inputs[0]["input_ids"], torch.cat([x["pixel_values"] for x in inputs])
    batch = model.predict_action_tokens(torch.cat([ids, ids]), pixels)
    for row, x in enumerate(inputs):
        embeds = model.multimodal_embeds(with_empty_token(ids), model.encode_image(x["pixel_values"]))
        assert torch.equal(batch[row:row + 1], dense_reference(model, embeds)[1])
    embeds = queries[0].expand(2, -1, -1)
    with pytest.raises(ValueError, match="a pruner runs one sequence at a time, got a batch of 2"):
        engine_for(model, "fastv", keep=0.25).prefill(embeds, layout_of(embeds))


class HostSyncs(TorchDispatchMode):
    """Records the ops that make the host wait for the device (reading a scalar, nonzero, unique)."""

    SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim",
               "aten::masked_select", "aten::is_nonzero"}

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.SYNCING:
            self.ops.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@torch.inference_mode()
def test_no_host_sync_in_the_per_layer_path(model_and_inputs):
    """Decode steps never wait for the device, and the prefill waits as often with one action layer as with
    four: probes find their rows once per segment and sum on the device (a GPU stays busy)."""
    model, queries = model_and_inputs
    embeds = queries[0]
    prefill_syncs = []
    for action_layers in ([4], [4, 5, 6, 7]):
        engine = engine_for(model, "vla", keep=0.25, dense_warmup=0, action_layers=action_layers)
        with HostSyncs() as syncs:
            state = engine.prefill(embeds, layout_of(embeds))
        prefill_syncs.append(syncs.ops)
        with HostSyncs() as syncs:
            engine.decode(state, N_TOKENS)
        assert syncs.ops == []
        assert state.trace.kept_visual == 64
    assert prefill_syncs[0] == prefill_syncs[1] and len(prefill_syncs[0]) < 20
