"""Aggregation of run directories into tables and plots, written through the real ResultStore."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vla_pruner.macs import layer_macs
from evaluate.analysis.ablation import main as ablation_main
from evaluate.analysis.metrics import query_metrics
from evaluate.analysis.report import load_runs, method_table, suite_table, task_table, write_report
from evaluate.analysis.stats import mcnemar_exact, wilson_interval
from evaluate.store import EpisodeRecord, ResultStore
from tests.conftest import REPO


def collect(*argv: str) -> None:
    """scripts/collect.py's main(argv) in this process, for the tests that read its tables: `python
    scripts/collect.py ARGS` is main() on ARGS and nothing else; the command as a process is
    test_collect_fails_clearly_without_the_paper_table's and test_bad_inputs_entry_points'."""
    runpy.run_path(str(REPO / "scripts" / "collect.py"))["main"](list(argv))

PROMPT = 35  # non-visual tokens of the prompt
D, M, L = 4096, 11008, 32  # OpenVLA-7B's Llama-2


def vla_query(kept: int, total_ms: float, warmup: bool = False) -> dict:
    """A query dict as the VLA policy writes it (OpenVLA: one image, prune layer 3, 6 decode steps)."""
    return {
        "latency_ms": {"vision": 0.2 * total_ms, "prefill": 0.5 * total_ms, "decode": 0.3 * total_ms,
                       "total": total_ms},
        "warmup": warmup, "visual_tokens": 256, "kept_visual": kept,
        "prefill_tokens": [PROMPT + 256] * 3 + [PROMPT + kept] * (L - 3),
        "decode_steps": 6, "selection_ms": 0.1,
    }


def write_run(root: Path, suite: str, pruner: str, keep: float, seed: int, outcomes: dict[int, list[bool]],
              total_ms: float, model: str = "openvla", device: str = "cuda", warmup_ms: float | None = None,
              family: str = "openvla", query=vla_query, options: dict | None = None) -> Path:
    """A run directory as `python -m evaluate` leaves it: config.yaml + episodes/taskNN.jsonl; `query(kept per
    image, total ms, warmup)` writes a query of the model's family; `options` are the pruner's (its directory's name)."""
    options = options or {}
    tag = "".join(f",{k}={v}" for k, v in options.items())
    run_dir = root / model / suite / f"{pruner}{tag}-keep{keep}" / f"seed{seed}"
    cfg = {"policy": {"name": "vla", "label": model}, "model": {"name": model, "family": family, "checkpoint": None},
           "pruner": {"name": pruner, **options}, "suite": {"name": suite, "max_steps": 220}, "keep": keep, "seed": seed,
           "device": device}
    run_dir.mkdir(parents=True)
    store = ResultStore(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    kept = 256 if pruner == "none" else round(keep * 256)
    for task_id, successes in outcomes.items():
        for init, success in enumerate(successes):
            queries = [query(kept, total_ms) for _ in range(3)]
            if warmup_ms is not None:
                queries[0] = query(256, warmup_ms, warmup=True)
            store.append(EpisodeRecord(suite=suite, task_id=task_id, task=f"task {task_id}", init_index=init,
                                       success=success, steps=10, wall_time_s=1.0, queries=queries))
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for suite, dense_ok in (("libero_spatial", [True] * 4), ("libero_object", [True, True, True, False])):
        write_run(root, suite, "none", 1.0, 7, {0: dense_ok[:2], 1: dense_ok[2:]}, total_ms=200.0)
        write_run(root, suite, "fastv", 0.5, 7, {0: [True, False], 1: [True, True]}, total_ms=100.0)
    write_run(root, "libero_spatial", "vla", 0.25, 7, {0: [True, False]}, total_ms=80.0, warmup_ms=190.0)
    write_run(root, "libero_spatial", "vla", 0.25, 8, {0: [False, False]}, total_ms=80.0, warmup_ms=190.0)
    return root


def test_success_pools_seeds_and_task_files_with_wilson(runs):
    rs = load_runs([runs])
    assert len(rs.runs) == 6
    row = suite_table(rs).set_index(["suite", "pruner"]).loc[("libero_spatial", "vla")]
    assert (row.episodes, row.successes, row.seeds) == (4, 1, 2)
    lo, hi = wilson_interval(1, 4)
    assert row.sr == 25.0 and row.sr_ci_low == pytest.approx(100 * lo) and row.sr_ci_high == pytest.approx(100 * hi)
    per_task = task_table(rs)
    assert set(per_task[per_task.pruner == "none"].task_id) == {0, 1}


def test_relative_accuracy_is_mean_over_suites_of_ratio(runs):
    table = method_table(load_runs([runs])).set_index("method")
    # FastV: spatial 3/4 vs dense 4/4, object 3/4 vs dense 3/4
    assert table.loc["FastV", "relative_acc_pct"] == pytest.approx(100 * (0.75 / 1.0 + 0.75 / 0.75) / 2)
    assert table.loc["Dense", "relative_acc_pct"] == pytest.approx(100.0)
    assert table.loc["VLA-Pruner", "relative_acc_pct"] == pytest.approx(25.0)  # spatial only


def test_cost_columns_latency_without_warmup_flops_tokens_speedup(runs):
    rs = load_runs([runs])
    table = method_table(rs).set_index("method")
    assert table.loc["VLA-Pruner", "latency_ms"] == 80.0  # the 190 ms warm-up queries excluded
    assert table.loc["FastV", "speedup"] == pytest.approx(2.0)
    assert table.loc["Dense", "prefill_tmacs"] == pytest.approx(32 * layer_macs(291, D, M) / 1e12)
    assert table.loc["Dense", "prefill_tmacs"] == pytest.approx(1.906, abs=1e-3)  # the paper's dense OpenVLA
    fastv = (3 * layer_macs(291, D, M) + 29 * layer_macs(PROMPT + 128, D, M)) / 1e12
    assert table.loc["FastV", "prefill_tmacs"] == pytest.approx(fastv)
    assert table.loc["FastV", "kept_visual"] == 128
    # headline FLOPs and kept tokens are the episode's: every query, the dense warm-up one included (one in three);
    # the pruned-query means (the paper's convention: the same token counts as FastV at the same keep) beside them
    assert table.loc["VLA-Pruner", "kept_visual_pruned"] == 64
    vla = (3 * layer_macs(291, D, M) + 29 * layer_macs(PROMPT + 64, D, M)) / 1e12
    assert table.loc["VLA-Pruner", "prefill_tmacs_pruned"] == pytest.approx(vla)
    assert table.loc["VLA-Pruner", "kept_visual"] == pytest.approx((256 + 2 * 64) / 3)
    assert table.loc["VLA-Pruner", "prefill_tmacs"] == pytest.approx((32 * layer_macs(291, D, M) / 1e12 + 2 * vla) / 3)
    assert table.loc["FastV", "prefill_tmacs_pruned"] == table.loc["FastV", "prefill_tmacs"]  # no warm-up
    per_suite = suite_table(rs)
    row = per_suite[per_suite.pruner == "vla"].iloc[0]
    assert row.kept_visual_mean == pytest.approx((256 + 2 * 64) / 3) and row.kept_visual_mean_pruned == 64
    assert row.prefill_tmacs_mean == pytest.approx((32 * layer_macs(291, D, M) / 1e12 + 2 * vla) / 3)
    assert row.prefill_tmacs_mean_pruned == pytest.approx(vla)
    metrics = query_metrics(ResultStore(runs / "openvla/libero_spatial/vla-keep0.25/seed7").records(),
                            {"name": "openvla", "family": "openvla"})
    assert metrics["warmup_queries"] == 2 and metrics["latency_total_median_ms"] == 80.0
    assert metrics["warmup_latency_total_median_ms"] == 190.0 and metrics["flops_unit"] == "TMACs"
    json.dumps(metrics)  # goes into summary.json


def test_table1_layout_rows_and_columns(runs):
    table = method_table(load_runs([runs]))
    assert list(table.columns[:10]) == ["model", "device", "retention_pct", "method", "spatial", "spatial_ci_low",
                                        "spatial_ci_high", "object", "object_ci_low", "object_ci_high"]
    assert list(zip(table.retention_pct, table.method)) == [(100.0, "Dense"), (50.0, "FastV"), (25.0, "VLA-Pruner")]
    assert {"relative_acc_pct", "prefill_tmacs", "full_tmacs", "kept_visual", "latency_ms", "speedup"} <= set(table.columns)


def test_resume_appends_and_policies_without_cost_keys(tmp_path):
    run_dir = write_run(tmp_path, "libero_goal", "none", 1.0, 7, {0: [True]}, total_ms=50.0)
    with open(run_dir / "episodes" / "task00.jsonl", "a") as f:
        f.write('{"suite": "libero_goal", "task_id": 0, "tas')  # a crash mid-write
    store = ResultStore(run_dir)  # the resumed run appends after the torn line
    store.append(EpisodeRecord(suite="libero_goal", task_id=0, task="task 0", init_index=1, success=False,
                               steps=300, wall_time_s=1.0, queries=[{}]))  # noop/scripted: no cost keys
    store.append(EpisodeRecord(suite="libero_goal", task_id=3, task="task 3", init_index=0, success=False,
                               steps=0, wall_time_s=0.0, status="skipped"))
    row = suite_table(load_runs([tmp_path])).iloc[0]
    assert (row.episodes, row.successes) == (2, 1)  # skipped not attempted, torn line ignored
    assert row.latency_total_median_ms == 50.0 and row.queries == 4


def test_report_writes_csv_markdown_latex_and_plots(runs, tmp_path):
    paths = write_report(load_runs([runs]), tmp_path)
    names = {p.name for p in paths}
    for table in ("tasks", "suites", "table1"):
        assert {f"{table}.csv", f"{table}.md", f"{table}.tex"} <= names
    assert "\\begin{table}" in (tmp_path / "table1.tex").read_text()
    assert "mean over suites of SR_method / SR_dense" in (tmp_path / "table1.md").read_text()
    for stem in ("openvla_success_vs_retention", "openvla_cuda_success_vs_flops", "openvla_cuda_success_vs_latency"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert all(p.stat().st_size > 0 for p in paths)


def test_collect_puts_paper_numbers_beside_ours(runs, tmp_path):
    collect(str(runs), "--out", str(tmp_path))
    table = pd.read_csv(tmp_path / "table1_vs_paper.csv")
    dense = table[(table.model == "openvla") & (table.method == "Dense")].iloc[0]
    assert dense.spatial == 100.0 and dense.spatial_paper == 87.6 and dense.spatial_diff == pytest.approx(12.4)
    # the paper's rows we did not run stay, with our columns empty
    assert table[table.method == "DivPrune"].spatial.isna().all() and len(table[table.method == "DivPrune"]) == 3
    assert not (table.model == "openvla_oft").any()  # no runs of it
    # the paper's FLOPs column beside our prefill count in its convention (pruned queries), with the difference;
    # our episode mean (every query) follows
    assert dense.prefill_tmacs_pruned_paper == 1.906
    assert dense.prefill_tmacs_pruned_diff == pytest.approx(dense.prefill_tmacs_pruned - 1.906)
    assert table[table.method == "DivPrune"].prefill_tmacs_pruned_paper.tolist() == [1.105, 0.743, 0.569]
    vla = table[(table.method == "VLA-Pruner") & table.prefill_tmacs.notna()].iloc[0]
    assert vla.prefill_tmacs > vla.prefill_tmacs_pruned  # its dense warm-up query is charged in the episode mean


def test_collect_fails_clearly_without_the_paper_table(runs, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "collect.py"), str(runs), "--paper",
                             str(tmp_path / "absent.csv")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "absent.csv" in result.stderr and "--paper" in result.stderr


def test_headline_cost_charges_the_dense_warmup_and_the_papers_convention_stands_beside(tmp_path):
    """Issue 36: an episode's dense warm-up queries are in the headline cost (what a user pays); the pruned-query
    means, the paper's convention (VLA-Pruner's FLOPs equal FastV's at the same keep), are a column of their own."""
    write_run(tmp_path, "libero_spatial", "fastv", 0.25, 7, {0: [True]}, total_ms=80.0)
    write_run(tmp_path, "libero_spatial", "vla", 0.25, 7, {0: [True]}, total_ms=80.0, warmup_ms=190.0)
    table = method_table(load_runs([tmp_path])).set_index("method")
    assert table.loc["VLA-Pruner", "prefill_tmacs_pruned"] == table.loc["FastV", "prefill_tmacs_pruned"]
    assert table.loc["VLA-Pruner", "kept_visual_pruned"] == table.loc["FastV", "kept_visual"] == 64
    assert table.loc["VLA-Pruner", "prefill_tmacs"] > table.loc["FastV", "prefill_tmacs"]
    assert table.loc["VLA-Pruner", "kept_visual"] == pytest.approx((256 + 2 * 64) / 3)


def test_the_flops_axis_reads_in_g_for_a_small_model(runs, tmp_path, monkeypatch):
    """A 7B model's prefill is about 1.9 T; the trained small model's 0.0017 T would print as run-together decimals."""
    from evaluate.analysis import plots

    labels = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, stem: labels.append(
        (fig.axes[0].get_xlabel(), fig.axes[0].get_xlim()[1])) or [])
    per_suite = plots.with_series(suite_table(load_runs([runs])))
    small = per_suite.assign(prefill_tmacs_mean=per_suite.prefill_tmacs_mean / 1000)
    for table in (per_suite, small):
        plots.success_vs_cost(table, "openvla", "cuda", "flops", tmp_path, plots.palette(table))
    (big_label, big_max), (small_label, small_max) = labels
    assert big_label.startswith("LLM prefill FLOPs (T,") and small_label.startswith("LLM prefill FLOPs (G,")
    assert small_max == pytest.approx(big_max)  # the same numbers, in G


def test_every_pruned_row_is_paired_with_fastv_at_the_same_keep_and_warmup(tmp_path):
    """Issue 36: McNemar against FastV on the same init states, at the same keep and dense warm-up."""
    outcomes = {"fastv": ({0: [True] + [False] * 7}, {}), "fastv,3": ({0: [True] * 6 + [False] * 2}, {"dense_warmup": 3}),
                "vla": ({0: [True] * 8}, {"dense_warmup": 3}), "vla,0": ({0: [False] * 7 + [True]}, {"dense_warmup": 0})}
    for name, (episodes, options) in outcomes.items():
        write_run(tmp_path, "libero_spatial", name.split(",")[0], 0.25, 7, episodes, total_ms=80.0,
                  warmup_ms=190.0 if options.get("dense_warmup") else None, options=options)
    write_run(tmp_path, "libero_spatial", "fastv", 0.5, 7, {0: [True] * 4}, total_ms=90.0)  # other init states
    write_run(tmp_path, "libero_spatial", "random", 0.5, 7, {1: [True] * 4}, total_ms=90.0)
    write_run(tmp_path, "libero_spatial", "random", 0.125, 7, {0: [True] * 4}, total_ms=90.0)
    write_run(tmp_path, "libero_spatial", "none", 1.0, 7, {0: [True] * 8}, total_ms=200.0)
    rs = load_runs([tmp_path])
    for table in (suite_table(rs), method_table(rs)):
        rows = {(m, k): r for m, k, r in zip(table.method, table.get("keep", table.get("retention_pct")) if
                                             "keep" in table else table.retention_pct / 100, table.itertuples())}
        vla = rows[("VLA-Pruner", 0.25)]  # 8/8 against FastV with the same 3 dense queries: 6/8, 2 discordant
        assert (vla.vs_fastv_pairs, vla.p_vs_fastv) == (8, 0.5)
        no_warmup = rows[("VLA-Pruner (dense_warmup=0)", 0.25)]  # 1/8 against FastV's 1/8, other episodes
        assert no_warmup.vs_fastv_pairs == 8 and no_warmup.p_vs_fastv == pytest.approx(mcnemar_exact(1, 1))
        assert rows[("FastV", 0.25)].vs_fastv == "reference" and pd.isna(rows[("FastV", 0.25)].p_vs_fastv)
        assert rows[("Random", 0.5)].vs_fastv == "no shared init states"
        assert rows[("Random", 0.125)].vs_fastv == "no FastV row at this keep, warm-up and cut"
    assert "McNemar" in (write_report(rs, tmp_path / "out") and (tmp_path / "out" / "table1.md").read_text())


def test_episodes_csv_holds_every_episode_with_its_queries_and_dense_ones(runs, tmp_path):
    write_report(load_runs([runs]), tmp_path)
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert len(episodes) == 4 * 4 + 2 * 2  # dense and FastV on two suites, VLA-Pruner two seeds of 2
    vla = episodes[episodes.pruner == "vla"]
    assert (vla.queries == 3).all() and (vla.dense_queries == 1).all() and set(vla.seed) == {7, 8}
    assert (episodes[episodes.pruner == "fastv"].dense_queries == 0).all()
    assert {"model", "suite", "task_id", "method", "keep", "init_index", "success", "steps"} <= set(episodes.columns)


def test_ablation_command_writes_the_table_and_the_plot(tmp_path):
    for options, successes in (({}, [True, False]), ({"dense_warmup": 3}, [True, True])):
        write_run(tmp_path / "runs", "libero_object", "fastv", 0.25, 7, {0: successes}, total_ms=80.0,
                  warmup_ms=190.0 if options else None, options=options)
    write_run(tmp_path / "runs", "libero_object", "vla", 0.25, 7, {0: [False, True]}, total_ms=80.0,
              warmup_ms=190.0, options={"dense_warmup": 3, "criterion": "action_only"})
    ablation_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])  # `python -m evaluate.ablation ARGS`
    table = pd.read_csv(tmp_path / "out" / "ablation.csv")
    row = table[table.method.str.startswith("VLA-Pruner")].iloc[0]
    assert (row.options, row.dense_warmup, row.episodes, row.successes) == ("criterion=action_only", 3, 2, 1)
    assert row.vs_fastv_pairs == 2 and row.p_vs_fastv == pytest.approx(mcnemar_exact(1, 1))
    assert row.prefill_tmacs > row.prefill_tmacs_pruned
    assert {"ablation.md", "ablation.tex", "ablation.png", "ablation.pdf"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_collect_sets_only_the_papers_model_beside_the_paper_and_names_every_checkpoint(tmp_path):
    """A small checkpoint run as `model=openvla_oft` (the trained policy, say) used to sit beside the paper's
    OpenVLA-OFT-7B row (diff -98.7); now it is a row of its own, named, and the paper's OFT rows are not listed for
    it (issue 38, item 8)."""
    small = REPO / "vla_pruner" / "checkpoints" / "openvla_oft_small"
    runs = tmp_path / "runs"
    for pruner, keep, outcomes in (("none", 1.0, [True, True]), ("fastv", 0.5, [True, False])):
        run_dir = write_run(runs, "libero_object", pruner, keep, 7, {0: outcomes}, total_ms=50.0, model="openvla_oft",
                            family="openvla_oft")
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        cfg["model"]["checkpoint"] = str(small)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    dense = write_run(runs, "libero_object", "none", 1.0, 7, {0: [True, False]}, total_ms=200.0)
    cfg = yaml.safe_load((dense / "config.yaml").read_text())
    cfg["model"]["checkpoints"] = {"libero_object": "openvla/openvla-7b-finetuned-libero-object"}
    (dense / "config.yaml").write_text(yaml.safe_dump(cfg))
    collect(str(runs), "--out", str(tmp_path))
    table = pd.read_csv(tmp_path / "table1_vs_paper.csv")
    oft = table[table.model == "openvla_oft"]
    assert sorted(oft.method) == ["Dense", "FastV"] and set(oft.reading) == {"not the paper's model"}
    assert set(oft.checkpoint) == {"openvla_oft_small"} and oft.object_paper.isna().all() and oft.object_diff.isna().all()
    [paired] = table[(table.model == "openvla") & (table.method == "Dense")].itertuples()
    assert paired.checkpoint == "openvla-7b-finetuned-libero-object" and paired.object_paper == 84.6
    assert paired.object_diff == pytest.approx(50.0 - 84.6)
