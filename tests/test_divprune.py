"""DivPrune: its selection against an independent brute-force greedy, its two prune points (before the LLM and
the shared cut) on the engine against the masked-key reference, and its FLOPs. keep=1.0 = dense and batched =
batch-1 are in the tests that loop over all pruners (test_engine.py, test_openvla_oft_model.py,
test_engine_batch.py, test_policy_batch.py)."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.divprune import divprune_select
from vla_pruner.macs import prefill_macs
from vla_pruner.diversity import select_diverse
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner

from tests.conftest import REPO
from tests.test_engine import dense_reference, engine_for, masked_reference, run_engine


def brute_force_divprune(features: np.ndarray, k: int) -> list[int]:
    """DivPrune's greedy written out with loops over every candidate, in float64 from the definitions: the first
    pick is the token whose sorted distance column has the largest second entry (the first being its own
    distance, 0), then the token with the largest minimum distance to the picks; ties to the lowest index."""
    n = len(features)
    norms = [sum(float(x) ** 2 for x in row) ** 0.5 for row in features]
    dist = [[1.0 - sum(float(a) * float(b) for a, b in zip(features[i], features[j])) / (norms[i] * norms[j])
             for j in range(n)] for i in range(n)]
    best, picks = None, []
    for i in range(n):
        second = sorted(dist[j][i] for j in range(n))[1]
        if best is None or second > best:
            best, first = second, i
    picks.append(first)
    while len(picks) < k:
        best = None
        for j in range(n):
            if j in picks:
                continue
            nearest = min(dist[p][j] for p in picks)
            if best is None or nearest > best:
                best, choice = nearest, j
        picks.append(choice)
    return picks


@pytest.mark.parametrize("seed", range(40))
def test_selection_equals_brute_force_greedy(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 13)), int(rng.integers(2, 17))
    features = rng.normal(size=(n, d)).astype(np.float32) + rng.normal(size=d).astype(np.float32)  # a shared offset
    for k in range(1, n + 1):
        picks = divprune_select(torch.from_numpy(features), k)
        assert picks.dtype == torch.long and picks.tolist() == brute_force_divprune(features, k), (n, d, k)


def test_exact_ties_go_to_the_lowest_index_and_duplicates_are_not_picked_twice():
    # orthonormal rows: every distance between two rows is exactly 1
    assert divprune_select(torch.eye(5), 5).tolist() == [0, 1, 2, 3, 4]
    # rows e0, e0, e1, e2: tokens 2 and 3 have the farthest nearest neighbour (2 before 3); then 0 (tied with 1 and 3
    # at distance 1), then 3; the last token, 1, duplicates the chosen 0: DivPrune's code would pick 0 again
    features = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    assert divprune_select(features, 4).tolist() == [2, 0, 3, 1]
    assert divprune_select(features, 4).tolist() == brute_force_divprune(features.numpy(), 4)


@pytest.mark.parametrize("seed", range(10))
def test_vla_pruners_filter_runs_the_same_greedy_away_from_float_ties(seed):
    """select_diverse (VLA-Pruner's filter) starts from the nearest OTHER token and ranks by its own distances; with
    no near-duplicate tokens that is DivPrune's greedy, against the same brute force."""
    features = np.random.default_rng(100 + seed).normal(size=(24, 16)).astype(np.float32)
    reference = brute_force_divprune(features, 10)
    assert select_diverse(torch.from_numpy(features), 10).tolist() == reference
    assert divprune_select(torch.from_numpy(features), 10).tolist() == reference


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match=r"k must be an integer in 0..4, got 5"):
        divprune_select(torch.randn(4, 3), 5)
    with pytest.raises(ValueError, match=r"2-D"):
        divprune_select(torch.randn(4), 2)
    features = torch.randn(4, 3)
    features[2] = 0
    with pytest.raises(ValueError, match=r"rows \[.*2.*\] are not finite"):
        divprune_select(features, 2)
    assert divprune_select(torch.randn(4, 3), 0).tolist() == []


# ------------------------------------------------------------------------------------------------ pruner


def test_plan_selects_on_embeddings_before_layer_0_or_on_layer_k_inputs():
    layout = ModelLayout(num_layers=8, image_tokens=(256, 256))
    before = build_pruner({"name": "divprune"}, keep=0.25, layout=layout)
    [stage] = before.plan.stages
    assert stage.layer == -1 and stage.visual_embeddings and not stage.hidden_states and stage.rows is None
    shared = build_pruner({"name": "divprune", "prune_layer": 3}, keep=0.25, layout=layout)
    [stage] = shared.plan.stages
    assert stage.layer == 2 and stage.hidden_states and not stage.visual_embeddings and stage.rows is None
    assert build_pruner({"name": "divprune"}, keep=1.0, layout=layout).plan.stages == ()
    for bad in (8, -1):
        with pytest.raises(ValueError, match=rf"prune_layer={bad} must be in 0..7 .*0 = before the LLM"):
            build_pruner({"name": "divprune", "prune_layer": bad}, keep=0.25, layout=layout)


def test_each_image_keeps_its_budget_chosen_on_the_stage_features():
    layout = ModelLayout(num_layers=8, image_tokens=(256, 256))
    features = [torch.randn(256, 16), torch.randn(256, 16)]
    for prune_layer, field in [(0, "visual_embeddings"), (3, "hidden_states")]:
        pruner = build_pruner({"name": "divprune", "prune_layer": prune_layer}, keep=0.125, layout=layout)
        selection = pruner.select(StageInputs(stage=0, **{field: features}))
        assert selection.num_rows == [256, 256]
        for kept, f in zip(selection.kept, features):
            assert torch.equal(kept, divprune_select(f, 32).sort().values)


# ------------------------------------------------------------------------------------------------ engine


@pytest.fixture(scope="module")
def model_and_inputs(fixtures_dir):
    from tests.references import openvla_fixture_queries

    return openvla_fixture_queries(fixtures_dir)


@torch.inference_mode()
def test_cut_before_the_llm_runs_every_layer_on_the_kept_tokens(model_and_inputs):
    """Prune point 0: no layer sees a dropped token, and the output is the masked reference with the dropped
    tokens hidden from layer 0 on; the kept tokens are DivPrune's choice on the projector outputs."""
    model, queries = model_and_inputs
    engine = engine_for(model, "divprune", keep=0.125)
    for embeds in queries[:2]:
        logits, tokens, trace = run_engine(engine, embeds)
        [selection] = trace.selections
        kept = selection.kept[0]
        assert torch.equal(kept, divprune_select(embeds[0, 1:257], 32).sort().values)
        assert trace.prefill_tokens == [embeds.shape[1] - 224] * 8 and trace.kept_visual == 32
        reference = masked_reference(model, embeds, kept, 0, tokens)
        torch.testing.assert_close(logits, reference[0], atol=2e-5, rtol=1e-4)
        assert torch.equal(torch.cat([r.argmax(-1) for r in reference], 1), tokens)


@torch.inference_mode()
def test_renumbered_positions_run_the_kept_sequence_as_the_plain_model_would(model_and_inputs):
    """positions=renumbered (DivPrune's code): the pruned query is the unpruned model on the shortened sequence
    [BOS, kept visual, prompt] at positions 0..n-1, decoding from n; the original positions give other logits."""
    model, queries = model_and_inputs
    engine = engine_for(model, "divprune", keep=0.125, positions="renumbered")
    original = engine_for(model, "divprune", keep=0.125)
    for embeds in queries[:2]:
        logits, tokens, trace = run_engine(engine, embeds)
        kept = trace.selections[0].kept[0]
        short = torch.cat([embeds[:, :1], embeds[:, 1 + kept], embeds[:, 257:]], dim=1)
        reference_logits, reference_tokens = dense_reference(model, short)
        torch.testing.assert_close(logits, reference_logits, atol=2e-5, rtol=1e-4)
        assert torch.equal(tokens, reference_tokens)
        assert (run_engine(original, embeds)[0] - logits).abs().max() > 1e-3


def test_renumbering_is_divprunes_own_point_only():
    layout = ModelLayout(num_layers=8, image_tokens=(256,))
    assert build_pruner({"name": "divprune", "positions": "renumbered"}, 0.25, layout).plan.renumber_positions
    assert not build_pruner({"name": "divprune"}, 0.25, layout).plan.renumber_positions
    with pytest.raises(ValueError, match="positions='renumbered' .* needs prune_layer=0"):
        build_pruner({"name": "divprune", "prune_layer": 3, "positions": "renumbered"}, 0.25, layout)
    with pytest.raises(ValueError, match="positions='sequential' is not valid; choose one of 'original', 'renumbered'"):
        build_pruner({"name": "divprune", "positions": "sequential"}, 0.25, layout)


# ------------------------------------------------------------------------------------------------- FLOPs


def flops_cli(capsys, *overrides: str) -> float:
    """`python -m evaluate.flops model=openvla OVERRIDES`'s last line, the command run in this process (it is
    `main(argv)` and nothing else; the process itself: tests/test_pi0_flops.py's CLI tests): a new interpreter
    importing torch and the harness for each count was most of this test's time."""
    from evaluate.analysis.flops import main

    main(["model=openvla", *overrides])
    return float(capsys.readouterr().out.strip().splitlines()[-1])


def test_flops_count_k_layers_dense_at_the_shared_point_by_default_and_every_layer_pruned_before_the_llm(capsys):
    """The run's default is the shared cut (K=3), where the paper's DivPrune FLOPs sit: 0.743 T at keep 0.25."""
    shared = flops_cli(capsys, "pruner=divprune", "keep=0.25")
    assert shared == pytest.approx(prefill_macs([291] * 3 + [35 + 64] * 29, 4096, 11008) / 1e12, rel=1e-5)
    assert shared == pytest.approx(0.743, rel=0.03)
    assert flops_cli(capsys, "pruner=divprune", "pruner.prune_layer=0", "keep=0.25") == pytest.approx(
        prefill_macs([35 + 64] * 32, 4096, 11008) / 1e12, rel=1e-5)


# ------------------------------------------------------------------------------------------- Table 1 row


def test_collect_puts_a_divprune_run_beside_the_papers_divprune_row(tmp_path):
    from tests.test_report import write_run

    runs = tmp_path / "runs"
    write_run(runs, "libero_spatial", "none", 1.0, 7, {0: [True, True]}, total_ms=200.0)
    write_run(runs, "libero_spatial", "divprune", 0.25, 7, {0: [True, False]}, total_ms=90.0)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "collect.py"), str(runs), "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "table1_vs_paper.csv")
    [row] = table[(table.method == "DivPrune") & (table.retention_pct == 25)].itertuples()
    assert row.spatial == 50.0 and row.spatial_paper == 77.4
