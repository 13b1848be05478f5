"""Pruning in pi0 (vla_pruner/models/pi0/pruned.py) on LeRobot's tiny pi0 and the fixture's real LIBERO
queries, for every pruner configuration in configs/pruner/ (as `model=pi0_tiny` composes them): keep=1.0 is the
dense model bit for bit; a pruned query equals the dense model with the dropped visual keys masked out in the
later prefix layers and in every expert step; the empty camera is never budget; action scores are the mean over
the 10 Euler steps; a batch with one pruner per sample equals each sample alone; recorded token counts give
pi0_flops' counts; and every pruner runs real LIBERO episodes through the CLI."""
import json

import pytest
import torch

from evaluate.policies.pi0 import UNSUPPORTED_PRUNERS
from vla_pruner.models.pi0.cost import pi0_macs, prefix_schedule, recorded_macs
from vla_pruner.models.pi0 import pruned as pi0_pruned
from vla_pruner.models.pi0.model import Pi0, PrefixCache
from vla_pruner.models.pi0.layers import block_mask
from vla_pruner.layout import TokenSet
from vla_pruner.pruning import Stage, budget, build_pruner

from tests.conftest import REPO, composed, run_cli

CAMERAS = 2  # agent view and wrist; the third slot is the empty camera
# every pruner group file pi0 runs (the ones it refuses are tested as refusals)
PRESETS = sorted(p.stem for p in (REPO / "configs" / "pruner").glob("*.yaml") if p.stem not in UNSUPPORTED_PRUNERS)
ATOL = 1e-5  # pruned vs masked-key reference: the same sums over differently shaped (padded) tensors


def preset(stem: str, **options) -> dict:
    """A pruner group file's options as `model=pi0_tiny` resolves them (e.g. prune_layer 2 of its 3 layers)."""
    from omegaconf import OmegaConf

    return {**OmegaConf.to_container(composed("model=pi0_tiny", f"pruner={stem}").pruner, resolve=True), **options}


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return Pi0.from_pretrained(fixtures_dir / "pi0_tiny_lerobot", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def inputs(model, fixtures_dir):
    """(embeds, valid, image_masks, padded state, noise) of two of the fixture's queries (a batch of 2 on a busy
    2-core machine; every sample is pruned by its own pruner)."""
    import numpy as np

    ref = {k: torch.from_numpy(v) for k, v in np.load(fixtures_dir / "pi0_tiny_lerobot_reference.npz").items()
           if v.dtype.kind != "U"}
    two = slice(1, 3)  # two different task prompts
    masks = torch.tensor([[True, True, False]] * 2)
    with torch.inference_mode():
        embeds, valid = model.embed_prefix(ref["pixel_values"][two], masks, ref["lang_tokens"][two],
                                           ref["lang_masks"][two])
    return embeds, valid, masks, model.pad_state(ref["state_norm"][two]), ref["noise"][two]


def pruners_for(model, cfg: dict, keep: float, n: int = 2):
    layout = pi0_pruned.pi0_layout(model, CAMERAS)
    return [build_pruner(cfg, keep, layout) for _ in range(n)]


def run(model, inputs, pruners, samples=slice(None)):
    """One query of the chosen samples: (chunk, the finished query)."""
    embeds, valid, masks, state, noise = (t[samples] for t in inputs)
    with torch.inference_mode():
        query = pi0_pruned.prefill(model, embeds, valid, masks, pruners)
        chunk = pi0_pruned.integrate(model, query, state, noise)
        pi0_pruned.finish(query)
    return chunk, query


def dense(model, inputs):
    embeds, valid, _, state, noise = inputs
    with torch.inference_mode():
        cache, _ = model.run_prefix(embeds, valid)
        return model.integrate(cache, state, noise)


def warmed_up(model, inputs, cfg, keep):
    """Pruners past their dense warm-up (VLA-Pruner's: while its action history fills)."""
    pruners = pruners_for(model, cfg, keep)
    for _ in range(cfg.get("dense_warmup", 0)):
        run(model, inputs, pruners)
    return pruners


def masked_reference(model, inputs, kept, cut):
    """The dense model in which, from layer `cut` on, only the language rows and each sample's kept visual tokens
    (`kept[b][i]`: original indices of valid camera i) are valid keys, in the prefix and in every expert step."""
    embeds, valid, _, state, noise = inputs
    n, depth = model.config.vision.num_patches, model.config.vlm.depth
    rows = torch.zeros_like(valid)
    rows[:, model.config.num_cameras * n:] = True
    for b, per_image in enumerate(kept):
        for i, indices in enumerate(per_image):
            rows[b, i * n + indices] = True
    after = valid & rows
    positions = torch.cumsum(valid.long(), dim=1) - 1
    zeros = torch.zeros_like(positions)
    cache = PrefixCache(offset=valid.sum(dim=1))
    with torch.inference_mode():
        hidden = model.prefix_layers(embeds, positions, block_mask(valid, zeros), valid, cache, 0, cut)
        model.prefix_layers(hidden, positions, block_mask(after, zeros), after, cache, cut, depth)
        return model.integrate(cache, state, noise)


@pytest.mark.parametrize("stem", PRESETS)
def test_keep_one_equals_dense_exactly(model, inputs, stem):
    reference = dense(model, inputs)
    chunk, query = run(model, inputs, pruners_for(model, preset(stem), 1.0))
    assert torch.equal(chunk, reference)
    assert all(t.prefill_tokens == [816] * 3 and t.kept_visual == 512 for t in query.traces)


def test_a_dense_warm_up_query_equals_dense_exactly(model, inputs):
    """VLA-Pruner's warm-up queries run every stage and probe, yet keep everything: the dense model's chunk."""
    chunk, query = run(model, inputs, pruners_for(model, preset("vla"), 0.25))
    assert all(t.selections[0].warmup for t in query.traces)
    assert torch.equal(chunk, dense(model, inputs))


# divprune.yaml cuts at the shared K (2 for pi0_tiny); its own point before the VLM is the extra case
CUTS = [(stem, {}) for stem in PRESETS if stem != "none"] + [("divprune", {"prune_layer": 0})]


@pytest.mark.parametrize("stem, options", CUTS, ids=[f"{s}{'-K0' if o else ''}" for s, o in CUTS])
def test_dropping_equals_the_masked_key_reference(model, inputs, stem, options):
    cfg = preset(stem, **options, **({"window": 1, "dense_warmup": 1} if stem.startswith("vla") else {}))  # one warm-up query
    pruners = warmed_up(model, inputs, cfg, 0.25)
    chunk, query = run(model, inputs, pruners)
    kept = [[k.cpu() for k in t.selections[0].kept] for t in query.traces]
    assert all(not t.selections[0].warmup and [len(k) for k in per] == [64, 64] for t, per in zip(query.traces, kept))
    reference = masked_reference(model, inputs, kept, cfg["prune_layer"])
    diff = (chunk - reference).abs().max().item()
    assert diff < ATOL, f"{stem}: pruned vs masked-key reference differ by {diff}"
    assert (chunk - dense(model, inputs)).abs().max().item() > 1e-3  # the test can fail: dropping changes actions


def test_the_empty_camera_is_never_budget(model, inputs):
    """Budgets and kept indices are per valid camera; the empty slot's rows go at the cut; FLOPs from the record."""
    [pruner] = pruners = pruners_for(model, preset("fastv"), 0.5, n=1)
    assert pruner.layout.image_tokens == (256, 256) and pruner.budgets == (128, 128)
    _, query = run(model, inputs, pruners, slice(0, 1))
    trace, c = query.traces[0], model.config
    assert trace.visual_tokens == 512 and trace.kept_visual == 256
    assert all(int(k.max()) < 256 for k in trace.selections[0].kept)
    assert trace.prefill_tokens == prefix_schedule(c, 128, 2, empty_rows=True) == [816, 816, 2 * 128 + 48]
    assert (query.layer_rows[-1][0].image != pi0_pruned.EMPTY_CAMERA).all()
    assert (query.layer_rows[0][0].image == pi0_pruned.EMPTY_CAMERA).sum() == 256  # run until the cut
    assert recorded_macs(c, trace.prefill_tokens, empty_rows=True) == pi0_macs(c, 128, 2, empty_rows=True)
    record = trace.to_record()
    assert record["kept_visual"] == 256 and record["pruning"][0]["kept"] == [128, 128]


def test_action_scores_are_the_mean_over_the_ten_euler_steps(model, inputs):
    """VLA-Pruner's history entry = the action rows' attention to each camera's tokens at its action layers
    (the later half: 1 and 2), averaged over heads, rows, layers and each Euler step, recomputed here directly."""
    [pruner] = pruners = pruners_for(model, preset("vla"), 0.25, n=1)
    _, query = run(model, inputs, pruners, slice(0, 1))
    observed = pruner.history[-1]
    per_step: list[torch.Tensor] = []

    def probe(probs):  # [1, heads, 51, 816 + 51]
        per_step.append(probs[0, :, -50:, :512].mean(0).mean(0))

    embeds, valid, _, state, noise = (t[:1] for t in inputs)
    with torch.inference_mode():
        cache, _ = model.run_prefix(embeds, valid)
        model.integrate(cache, state, noise, {1: probe, 2: probe})
    assert len(per_step) == 20  # 2 layers x 10 steps
    expected = torch.stack(per_step).mean(0)
    torch.testing.assert_close(torch.cat(observed), expected, atol=1e-7, rtol=1e-5)
    first_step = torch.stack(per_step[:2]).mean(0)
    assert (first_step - expected).abs().max() > 1e-4  # the steps differ: the average is not one step's


def test_a_batch_equals_each_sample_alone(model, inputs):
    """One VLA-Pruner per sample, sample 0 still warming up (dense, 816 rows) beside a pruned one (176 rows): the
    batch runs padded, yet each sample's chunk, kept set and new history entry are its batch-1 run's."""
    cfg = preset("vla", window=1, dense_warmup=1)
    batched, alone = pruners_for(model, cfg, 0.25), pruners_for(model, cfg, 0.25)
    for pruners in (batched, alone):  # prime sample 1's with one query, alone
        run(model, inputs, pruners[1:], slice(1, 2))
    chunk, query = run(model, inputs, batched)
    assert [t.prefill_tokens[-1] for t in query.traces] == [816, 176]
    for b in range(2):
        single, one = run(model, inputs, [alone[b]], slice(b, b + 1))
        torch.testing.assert_close(chunk[b:b + 1], single, atol=ATOL, rtol=0)
        for mine, theirs in zip(query.traces[b].selections[0].kept, one.traces[0].selections[0].kept):
            assert torch.equal(mine, theirs)
        torch.testing.assert_close(torch.cat(batched[b].history[-1]), torch.cat(alone[b].history[-1]),
                                   atol=1e-6, rtol=0)


def test_a_pruned_query_records_flops_that_follow_its_kept_counts(model, inputs):
    for keep in (0.5, 0.25, 0.125):
        _, query = run(model, inputs, pruners_for(model, preset("random"), keep, n=1), slice(0, 1))
        kept = budget(keep, 256)
        assert query.traces[0].prefill_tokens == prefix_schedule(model.config, kept, 2, empty_rows=True)


def without_the_empty_camera(model, inputs):
    """The inputs as the policy builds them: the empty camera's slot left out of the prefix."""
    embeds, valid, masks, state, noise = inputs
    n = model.config.vision.num_patches
    rows = torch.cat([torch.arange(CAMERAS * n), torch.arange(3 * n, embeds.shape[1])])
    return embeds[:, rows], valid[:, rows], masks[:, :CAMERAS], state, noise


@pytest.mark.parametrize("stem", ["none", "fastv", "sparsevlm", "random"])
def test_leaving_the_empty_camera_out_changes_no_output(model, inputs, stem):
    """Dense and pruned, the prefix without the empty camera's rows (560 tokens on the real pi0, 2 x 256 + 48
    here) gives the kept sets and the chunk of the prefix that computes them as masked keys (816 rows)."""
    keep = 1.0 if stem == "none" else 0.25
    with_empty, with_query = run(model, inputs, pruners_for(model, preset(stem), keep))
    lean, lean_query = run(model, without_the_empty_camera(model, inputs), pruners_for(model, preset(stem), keep))
    assert (with_empty - lean).abs().max().item() < ATOL
    for full, short in zip(with_query.traces, lean_query.traces):
        assert short.prefill_tokens == prefix_schedule(model.config, None if keep == 1.0 else budget(keep, 256), 2)
        assert short.prefill_tokens[0] == 2 * 256 + 48 and full.prefill_tokens[0] == 3 * 256 + 48
        for a, b in zip(full.selections, short.selections):
            assert all(torch.equal(x, y) for x, y in zip(a.kept, b.kept))
    if stem == "none":
        assert torch.equal(with_empty, dense(model, inputs))


def test_semantic_rows_are_every_valid_prefix_row_and_language_rows_an_option(model, inputs):
    """rows "prefill" = every valid row of the prefix (both cameras' tokens and the prompt, not its padding nor the
    empty camera), "text" = the valid language rows, "last" = the last of those; checked on made-up probabilities."""
    embeds, valid, *_ = inputs
    P, n = valid.shape[1], model.config.vision.num_patches
    probs = torch.rand(1, 2, P, P)
    image = torch.full((P,), -1)
    image[:3 * n] = pi0_pruned.EMPTY_CAMERA
    image[:n], image[n:2 * n] = 0, 1
    rows = TokenSet(torch.arange(P), image, torch.zeros(P, dtype=torch.bool))
    language = torch.nonzero(valid[0] & (image == -1)).flatten()
    expected = {"prefill": torch.nonzero(valid[0]).flatten(), "text": language, "last": language[-1:]}
    assert len(expected["prefill"]) == 2 * n + len(language) < P
    for kind, queries in expected.items():
        stage = Stage(layer=1, rows=kind)
        one = pi0_pruned.stage_inputs(0, stage, 0, rows, probs, embeds, valid, None, 2)
        mean = probs[0][:, queries].mean(0).mean(0)
        for i in range(2):
            torch.testing.assert_close(one.attention[i].mean(0), mean[i * n:(i + 1) * n])
    assert preset("vla")["semantic_source"] == "prefill"
    assert build_pruner(preset("vla", semantic_source="text"), 0.25,
                                  pi0_pruned.pi0_layout(model, CAMERAS)).plan.stages[0].rows == "text"


def test_vla_cache_is_refused_before_weights_load(tmp_path):
    result = run_cli("model=pi0_tiny", "pruner=vla_cache", "keep=0.5", f"output_root={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: pruner 'vla_cache': VLA-Cache reuses the previous query's keys/values"), line
    assert "valid choices for pi0: divprune, fastv, none, random, sparsevlm, vla" in line


@pytest.mark.sim
def test_every_pruner_runs_real_libero_episodes(tmp_path):
    """One multirun at pi0's own replan_steps (5 actions of each 50-action chunk): 17 steps = 5 + 5 + 5 + 2, 4
    queries, so VLA-Pruner (window 3) prunes the last, and the short last chunk is cut at the step limit. Its `none`
    run is also pi0's plain episode through the CLI (once a test of its own, which cost another interpreter, model
    load and simulator): absolute actions and replan_steps 5 as its summary says; a changed default replan_steps,
    or a chunk not cut at the limit, changes the query count and fails here."""
    stems = PRESETS
    result = run_cli("-m", "model=pi0_tiny", f"pruner={','.join(stems)}", "keep=0.25", "suite=libero_object",
                     "tasks=[0]", "episodes_per_task=1", "suite.max_steps=17", f"output_root={tmp_path}",
                     timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    for stem in stems:
        [run_dir] = (tmp_path / "pi0_tiny" / "libero_object").glob(f"{stem}-keep0.25*/seed7")
        [record] = [json.loads(line) for line in (run_dir / "episodes" / "task00.jsonl").read_text().splitlines()]
        assert record["status"] == "ok" and record["steps"] == 17 and len(record["queries"]) == 4, stem
        kept = [q["kept_visual"] for q in record["queries"]]
        expected = {"none": [512] * 4, "vla": [512] * 3 + [128], "vla_released": [512] * 3 + [128]}
        assert kept == expected.get(stem, [128] * 4), (stem, kept)
        assert all(q["visual_tokens"] == 512 and len(q["prefill_tokens"]) == 3 for q in record["queries"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["policy"]["pruner"]["name"] == ("vla" if stem == "vla_released" else stem)
        assert summary["cost"]["prefill_tmacs_mean"] > 0
        assert summary["policy"]["relative_actions"] is False and summary["policy"]["replan_steps"] == 5
