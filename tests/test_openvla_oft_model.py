"""OpenVLA-OFT against the official code's outputs (fixture checkpoint + its action chunks on real LIBERO
frames), and its pruned pass against references that keep every token (bidirectional attention)."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vla_pruner.engine import PruningEngine
from evaluate.envs.libero_conventions import gripper_to_env
from vla_pruner.models.checkpoint import CheckpointError
from vla_pruner.models.llama import bidirectional_mask
from vla_pruner.models.openvla_oft.model import OpenVLAOFT, sequence_layout
from vla_pruner.models.openvla.processor import OpenVLAProcessor
from evaluate.envs.libero_conventions import quat_to_axis_angle, robot_state
from vla_pruner.pruning import ModelLayout, QueryContext, build_pruner

from tests.references import eager_attention

ATOL = 1e-4  # the acceptance tolerance against the official outputs


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    path = fixtures_dir / "openvla_oft_tiny_hf"
    model = OpenVLAOFT.from_pretrained(path, device="cpu", dtype="float32")
    return model, OpenVLAProcessor.from_pretrained(path), np.load(fixtures_dir / "openvla_oft_tiny_hf_reference.npz")


def case_inputs(model, processor, reference, i):
    """The official predict_action inputs for case i: prompt ids, both images' pixels, normalised proprio."""
    inputs = processor(str(reference["prompt"][i]), Image.fromarray(reference["primary"][i]))
    wrist = processor.image_processor(Image.fromarray(reference["wrist"][i]))
    proprio = model.normalize_proprio(reference["proprio_raw"][i], str(reference["unnorm_key"][i]))
    return {**inputs, "pixel_values": torch.cat([inputs["pixel_values"], wrist], dim=1), "proprio": proprio}


@pytest.fixture(scope="module")
def queries(fixture):
    """LLM input embeddings of every reference case."""
    model, processor, reference = fixture
    out = []
    with torch.inference_mode():
        for i in range(len(reference["prompt"])):
            x = case_inputs(model, processor, reference, i)
            out.append(model.multimodal_embeds(x["input_ids"], model.encode_images(x["pixel_values"]),
                                               model.project_proprio(x["proprio"])))
    return out


def test_predict_action_reproduces_the_official_chunks(fixture):
    model, processor, reference = fixture
    for i in range(len(reference["prompt"])):
        x = case_inputs(model, processor, reference, i)
        np.testing.assert_allclose(x["proprio"], reference["proprio_norm"][i], atol=1e-12)
        actions, normalized = model.predict_action(**x, unnorm_key=str(reference["unnorm_key"][i]))
        assert actions.shape == normalized.shape == (8, 7)
        np.testing.assert_allclose(normalized, reference["normalized_actions"][i], atol=ATOL, rtol=0)
        np.testing.assert_allclose(actions, reference["actions"][i], atol=ATOL, rtol=0)


def test_checkpoint_parts_follow_the_llm_width(fixture):
    model = fixture[0]
    width = model.language_model.config.hidden_size
    assert model.proprio_projector.fc1.weight.shape == (width, 8)
    assert model.action_head.model.fc1.weight.shape == (width, 7 * width)


def test_missing_action_head_fails_clearly(fixtures_dir, tmp_path):
    for f in (fixtures_dir / "openvla_oft_tiny_hf").iterdir():
        if not f.name.startswith("action_head"):
            (tmp_path / f.name).symlink_to(f)
    with pytest.raises(CheckpointError, match="expected one action_head--<step>_checkpoint.pt .* found none"):
        OpenVLAOFT.from_pretrained(tmp_path, device="cpu")


def test_proprio_assembly():
    assert np.allclose(quat_to_axis_angle([0, 0, 0, 1]), 0)
    assert np.allclose(quat_to_axis_angle([1, 0, 0, 0]), [math.pi, 0, 0])  # gripper pointing down
    half = math.sqrt(0.5)
    assert np.allclose(quat_to_axis_angle([0, 0, half, half]), [0, 0, math.pi / 2])
    state = robot_state([0.1, 0.2, 0.3], [1, 0, 0, 0], [0.04, -0.04])
    assert np.allclose(state, [0.1, 0.2, 0.3, math.pi, 0, 0, 0.04, -0.04])


def test_unnormalisation_and_gripper(fixture):
    model = fixture[0]
    stats = model.norm_stats["libero_spatial_no_noops"]["action"]
    normalized = np.stack([-np.ones(7), np.ones(7), np.full(7, 0.3)])
    actions = model.unnormalize(normalized, "libero_spatial")  # the `_no_noops` fallback
    np.testing.assert_allclose(actions[0, :6], stats["q01"][:6], atol=1e-7)
    np.testing.assert_allclose(actions[1, :6], stats["q99"][:6], atol=1e-7)
    assert actions[2, 6] == 0.3  # the gripper is not normalised (mask false)
    assert gripper_to_env(actions)[:, 6].tolist() == [1.0, -1.0, 1.0]  # < 0.5 closes (+1), > 0.5 opens (-1)


@torch.inference_mode()
def test_attention_is_bidirectional(fixture, queries):
    model = fixture[0]
    embeds = queries[0]
    changed = embeds.clone()
    changed[:, -1] += 1.0  # the </s> token, last in the sequence
    before, after = final_hidden(model.run_llm(embeds)), final_hidden(model.run_llm(changed))
    assert (after[:, :10] - before[:, :10]).abs().max() > 1e-3  # BOS and the first visual tokens see it
    # causal attention would give other actions (the official checkpoints depend on bidirectionality)
    positions = torch.arange(embeds.shape[1])[None]
    causal = model.language_model.run_layers(embeds, positions)
    assert (model.action_chunk(causal) - model.action_chunk(before)).abs().max() > 1e-2


def final_hidden(state) -> torch.Tensor:
    """[B, n, d] a query's final hidden states of every row, when all samples kept the same number of rows."""
    [group] = state.groups
    return group.hidden


def engine_for(model, name, keep, **options) -> PruningEngine:
    lm = model.language_model
    pruner = build_pruner({"name": name, **options}, keep, ModelLayout(len(lm.layers), (256, 256)))
    pruner.reset(seed=7, episode="libero_spatial/0/0")
    return PruningEngine(lm, pruner)


@torch.inference_mode()
def run_engine(engine, embeds):
    engine.pruner.begin_query(QueryContext(robot_state=np.zeros(8)))  # what VLAPolicy tells it (VLA-ADP's gate)
    state = engine.prefill(embeds, sequence_layout(embeds.shape[1]))
    assert state.next_token is None  # OFT reads its action head, it does not decode
    engine.finish(state)
    return final_hidden(state), state.trace


@torch.inference_mode()
def dense_reference(model, embeds) -> torch.Tensor:
    """The unpruned bidirectional pass written out with the layer loop alone."""
    S = embeds.shape[1]
    return model.language_model.run_layers(embeds, torch.arange(S)[None],
                                           attention_mask=bidirectional_mask(S, embeds.device))


@torch.inference_mode()
def masked_reference(model, embeds, kept: list[torch.Tensor], prune_layer: int, renumber: bool = False) -> torch.Tensor:
    """Every token stays; from layer K on, dropped visual tokens are hidden as keys (bidirectional). `renumber`
    (K = 0 only): the kept rows at positions 0..n-1, as a renumbering plan runs them."""
    return masked_cuts_reference(model, embeds, [(prune_layer, kept)], renumber)


@torch.inference_mode()
def masked_cuts_reference(model, embeds, cuts: list[tuple[int, list[torch.Tensor]]],
                          renumber: bool = False) -> torch.Tensor:
    """`masked_reference` for several cuts: at each (K, per image the ORIGINAL visual indices still kept), the
    tokens dropped so far are hidden as keys from layer K on."""
    lm = model.language_model
    S = embeds.shape[1]
    layout = sequence_layout(S)
    hidden, start = embeds, 0
    mask = bidirectional_mask(S, embeds.device)
    positions = torch.arange(S)[None]
    for prune_layer, kept in cuts:
        hidden = lm.run_layers(hidden, positions, attention_mask=mask, start=start, stop=prune_layer)
        key_ok = torch.ones(S, dtype=torch.bool)
        for visual, k in zip(layout.visual, kept):
            key_ok[visual] = False
            key_ok[visual.start + k] = True
        mask = key_ok[None, None, None].expand(1, 1, S, S)
        if renumber:
            positions = (torch.cumsum(key_ok, 0) - 1)[None]
        start = prune_layer
    return lm.run_layers(hidden, positions, attention_mask=mask, start=start)


@torch.inference_mode()
def test_keep_one_and_none_equal_the_dense_model(fixture, queries):
    model = fixture[0]
    for embeds in queries[::2]:
        dense = model.action_chunk(dense_reference(model, embeds))
        assert torch.equal(model.action_chunk(final_hidden(model.run_llm(embeds))), dense)
        for name, keep in [("none", 0.25), ("vla", 1.0), ("fastv", 1.0), ("sparsevlm", 1.0), ("random", 1.0),
                           ("divprune", 1.0), ("vla_cache", 1.0), ("gated_vla_cache", 1.0), ("vla_adp", 1.0),
                           ("specprune", 1.0)]:
            hidden, trace = run_engine(engine_for(model, name, keep), embeds)
            assert torch.equal(model.action_chunk(hidden), dense), name
            assert trace.kept_visual == 512 and trace.prefill_tokens == [embeds.shape[1]] * 8


@torch.inference_mode()
@pytest.mark.parametrize("name, options", [("fastv", {}), ("fastv", {"prune_layer": 5}), ("random", {}),
                                           ("sparsevlm", {}), ("vla", {"dense_warmup": 0}),
                                           ("divprune", {"prune_layer": 0}), ("divprune", {"prune_layer": 3}),
                                           ("vla_adp", {"gate": False})])
def test_pruned_readout_equals_masked_reference(fixture, queries, name, options):
    model = fixture[0]
    engine = engine_for(model, name, keep=0.25, **options)
    renumber = engine.pruner.plan.renumber_positions  # VLA-ADP: cut before layer 0, positions renumbered
    prune_layer = options.get("prune_layer", 0 if renumber else 3)
    budgets = [51, 77] if name == "vla_adp" else [64, 64]  # ADP: round(512 x 0.25) = 128 split 0.4 / 0.6
    for embeds in queries[::2]:  # the two prompts
        hidden, trace = run_engine(engine, embeds)
        [selection] = trace.selections
        assert [len(k) for k in selection.kept] == budgets and trace.kept_visual == 128  # per-image budgets
        S = embeds.shape[1]
        assert trace.prefill_tokens == [S] * prune_layer + [S - 384] * (8 - prune_layer)
        assert hidden.shape[1] == S - 384
        reference = masked_reference(model, embeds, selection.kept, prune_layer, renumber)
        torch.testing.assert_close(model.action_chunk(hidden), model.action_chunk(reference), atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_two_cut_readout_equals_masked_reference(fixture, queries):
    """SpecPrune's two cuts (after layers 0 and 1; frames: a black one, then the same noise twice, so the second
    query finds every patch static) against hiding the dropped tokens as keys from layers 1 and 2 on."""
    model = fixture[0]
    engine = engine_for(model, "specprune", keep=0.25)
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for frame in (np.zeros_like(noise), noise, noise):
        embeds = queries[0]
        engine.pruner.begin_query(QueryContext(robot_state=np.zeros(8)))
        state = engine.prefill(embeds, sequence_layout(embeds.shape[1]), frames=[[frame, frame]])
        engine.finish(state)
        first, second = state.trace.selections
        kept1 = first.kept
        kept2 = [before[k] for before, k in zip(kept1, second.kept)]
        reference = masked_cuts_reference(model, embeds, [(1, kept1), (2, kept2)])
        torch.testing.assert_close(model.action_chunk(final_hidden(state)), model.action_chunk(reference),
                                   atol=2e-5, rtol=1e-4)
    assert sum(len(k) for k in kept2) < 256  # the last query cut most tokens


@torch.inference_mode()
def test_vla_action_score_is_the_placeholder_rows_attention(fixture, queries):
    """A dense warm-up query's history entry = attention of the 56 placeholder rows to each image's visual
    keys, averaged over heads, rows and the later half of the layers (computed here with eager attention)."""
    model = fixture[0]
    engine = engine_for(model, "vla", keep=0.25)
    embeds = queries[0]
    _, trace = run_engine(engine, embeds)
    assert trace.selections[0].warmup and len(engine.pruner.history) == 1
    lm = model.language_model
    S = embeds.shape[1]
    layout = sequence_layout(S)
    positions = torch.arange(S)[None]
    per_layer = []
    for layer_idx in range(4, 8):
        layer_input = lm.run_layers(embeds, positions, attention_mask=bidirectional_mask(S, "cpu"), stop=layer_idx)
        weights = eager_attention(lm, layer_idx, layer_input, positions, torch.zeros(1, 1, S, S))
        per_layer.append(weights[0].mean(0)[layout.action_queries].mean(0))
    expected = torch.stack(per_layer).mean(0)
    assert layout.action_queries == slice(S - 57, S - 1)
    for image, visual in enumerate(layout.visual):
        torch.testing.assert_close(engine.pruner.history[0][image], expected[visual].float(), atol=1e-6, rtol=1e-5)
