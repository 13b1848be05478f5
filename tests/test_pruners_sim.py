"""Every pruner through the real CLI on the real simulator, with both tiny models (one Hydra multirun each)."""
import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.sim

PRUNERS = ("none", "random", "fastv", "sparsevlm", "vla", "divprune", "vla_cache")
# model: (max steps, actions per query, the pruners of its multirun). Steps: enough policy queries for every pruner
# of the multirun to show its pattern. OpenVLA (one action a query): 4 queries, so VLA-Pruner (window 3) leaves its
# dense warm-up and prunes once (check_run asks for that pruned query: 3 steps would fail it). OpenVLA-OFT (8 actions
# a query): 2 queries (VLA-Cache's dense first query, then its reuse); its VLA-Pruner, which needs 4 queries (32
# simulator steps) to prune once, runs in the OFT episode of
# test_fastv_with_the_same_dense_warmup_as_vla_pruner_charges_it_in_the_headline_cost (a multirun of fastv and vla
# at 32 steps, checked by `check_run` below) rather than holding the six other OFT episodes at 32 steps each.
OFT_STEPS = 16
CASES = {"openvla_tiny": (4, 1, PRUNERS),
         "openvla_oft_tiny": (OFT_STEPS, 8, tuple(p for p in PRUNERS if p != "vla"))}


def check_run(run_dir, model: str, pruner: str, steps: int, chunk: int) -> None:
    """One pruner's real episode: its record's steps, queries, latencies and kept tokens, and its summary."""
    visual = 256 if model == "openvla_tiny" else 512
    [record] = [json.loads(line) for line in (run_dir / "episodes" / "task00.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["steps"] == steps
    queries = record["queries"]
    assert len(queries) == steps // chunk
    assert all(q["latency_ms"]["total"] > 0 and q["latency_ms"]["prefill"] > 0 for q in queries)
    if model == "openvla_oft_tiny":  # the whole chunk from one forward pass: nothing decoded token by token
        assert all(q["decode_steps"] == 0 for q in queries)
    kept = [q["kept_visual"] for q in queries]
    expected_pruned = visual // 4  # round(0.25 * 256) per image
    if pruner == "none":
        assert kept == [visual] * len(queries) and all(q["pruning"] == [] for q in queries)
    elif pruner == "vla_cache":  # dense first query (fills the store), then recomputes at least the budget
        assert len(queries) >= 2  # a query that can reuse
        assert kept[0] == visual and all(expected_pruned <= k <= visual for k in kept)
        assert [q["reused_visual"] for q in queries] == [visual - k for k in kept] and min(kept) < visual
    elif pruner == "vla":  # dense while the action history fills (3 queries), then pruned
        assert len(queries) >= 4  # at least one pruned query
        assert kept[:3] == [visual] * 3 and kept[3:] == [expected_pruned] * (len(queries) - 3)
        assert [q["warmup"] for q in queries][:4] == [True, True, True, False]
    else:
        assert kept == [expected_pruned] * len(queries), pruner
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["policy"]["pruner"]["name"] == pruner
    assert summary["cost"]["prefill_tmacs_mean"] > 0


@pytest.mark.parametrize("model", CASES)
def test_every_pruner_runs_real_episodes(model, tmp_path):
    steps, chunk, pruners = CASES[model]
    result = run_cli("-m", f"model={model}", f"pruner={','.join(pruners)}", "keep=0.25", "suite=libero_spatial",
                     "tasks=[0]", "episodes_per_task=1", f"suite.max_steps={steps}", f"output_root={tmp_path}",
                     timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    for pruner in pruners:
        check_run(tmp_path / model / "libero_spatial" / f"{pruner}-keep0.25" / "seed7", model, pruner, steps, chunk)


def test_fastv_with_the_same_dense_warmup_as_vla_pruner_charges_it_in_the_headline_cost(tmp_path):
    """Issue 36: `pruner.dense_warmup=3` runs the first 3 queries of the episode unpruned for any dropping pruner,
    names the run, marks the queries and counts them in the summary's headline (episode) cost.

    The same multirun runs VLA-Pruner on OpenVLA-OFT, whose own dense warm-up is those 3 queries (its default, so
    its run is plain `vla`): its episode is checked as test_every_pruner_runs_real_episodes checks every pruner's,
    which leaves that test's OFT episodes short (2 queries) and this one the only OFT episode long enough for
    VLA-Pruner to prune.

    32 steps (4 queries: 3 warm-up, 1 pruned) is the shortest episode that still tells the cases apart: a warm-up not
    run dense, not marked, or left out of the headline cost changes kept_visual or the episode mean (which must
    differ from the pruned-only mean), and VLA-Pruner's one pruned query is what check_run asks of it."""
    # ++: a multirun composes the default pruner (none, which has no dense_warmup) before its points
    result = run_cli("-m", "model=openvla_oft_tiny", "pruner=fastv,vla", "++pruner.dense_warmup=3", "keep=0.25",
                     "suite=libero_spatial", "tasks=[0]", "episodes_per_task=1", "suite.max_steps=32",
                     f"output_root={tmp_path}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(tmp_path / "openvla_oft_tiny" / "libero_spatial" / "vla-keep0.25" / "seed7", "openvla_oft_tiny", "vla",
              32, 8)
    run_dir = tmp_path / "openvla_oft_tiny" / "libero_spatial" / "fastv,dense_warmup=3-keep0.25" / "seed7"
    [record] = [json.loads(line) for line in (run_dir / "episodes" / "task00.jsonl").read_text().splitlines()]
    queries = record["queries"]
    assert [q["kept_visual"] for q in queries] == [512] * 3 + [128]
    assert [q["warmup"] for q in queries] == [True] * 3 + [False]
    assert json.loads((run_dir / "run_identity.json").read_text())["pruner"]["dense_warmup"] == 3
    cost = json.loads((run_dir / "summary.json").read_text())["cost"]
    assert cost["kept_visual_mean"] == pytest.approx((3 * 512 + 128) / 4)  # the episode's: warm-up included
    assert cost["kept_visual_mean_pruned"] == 128
    assert cost["prefill_tmacs_mean"] > cost["prefill_tmacs_mean_pruned"] > 0
