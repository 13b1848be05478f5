"""Tables and plots with LIBERO-PRO's perturbed suites (issue 30): their own columns in Table 1 (the paper's relative
accuracy stays over the unperturbed suites), and the robustness view: each pruner's drop relative to dense on the
same suite, perturbed beside unperturbed, with an exact McNemar test over the init states both ran."""
from __future__ import annotations

import pandas as pd
import pytest

from evaluate.analysis.report import load_runs, method_table, suite_table, write_report
from evaluate.analysis.robustness import robustness_table
from evaluate.analysis.stats import mcnemar_exact
from tests.test_report import write_run

ALL = [True] * 10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_run(root, "libero_object", "none", 1.0, 7, {0: ALL}, total_ms=200.0)
    write_run(root, "libero_object", "vla", 0.5, 7, {0: [False] * 2 + [True] * 8}, total_ms=100.0)
    write_run(root, "libero_object_swap", "none", 1.0, 7, {0: [True] * 9 + [False]}, total_ms=200.0)
    write_run(root, "libero_object_swap", "vla", 0.5, 7, {0: [False] * 6 + [True] * 4}, total_ms=100.0)
    write_run(root, "libero_spatial", "none", 1.0, 7, {0: ALL}, total_ms=200.0)  # no perturbed suite of its own
    write_run(root, "libero_spatial", "vla", 0.5, 7, {0: ALL}, total_ms=100.0)
    return root


def test_mcnemar_exact_two_sided():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(2, 0) == 0.5 and mcnemar_exact(0, 6) == 2 / 64
    assert mcnemar_exact(6, 1) == pytest.approx(2 * (1 + 7) / 128) and mcnemar_exact(3, 3) == 1.0


def test_drop_relative_to_dense_perturbed_beside_unperturbed_with_a_paired_test(runs):
    rs = load_runs([runs])
    table = robustness_table(rs, suite_table(rs))
    assert list(table.suite) == ["libero_object", "libero_object_swap"]  # spatial has no perturbed run: not shown
    assert list(table.perturbation) == ["none", "swap"] and set(table.base_suite) == {"libero_object"}
    plain, swap = table.iloc[0], table.iloc[1]
    assert (plain.dense_sr, plain.sr, plain.drop_pp) == (100.0, 80.0, 20.0)
    assert (plain.pairs, plain.dense_only, plain.method_only, plain.paired_drop_pp) == (10, 2, 0, 20.0)
    assert plain.p_value == 0.5
    assert (swap.dense_sr, swap.sr, swap.drop_pp) == (90.0, 40.0, 50.0)
    assert (swap.pairs, swap.dense_only, swap.method_only, swap.paired_drop_pp) == (10, 6, 1, 50.0)
    assert swap.p_value == pytest.approx(0.125)


def test_episodes_pair_only_where_both_ran(tmp_path):
    write_run(tmp_path, "libero_goal", "none", 1.0, 7, {0: [True] * 4}, total_ms=1.0)
    write_run(tmp_path, "libero_goal_lan", "none", 1.0, 7, {0: [True] * 4}, total_ms=1.0)
    write_run(tmp_path, "libero_goal_lan", "fastv", 0.25, 7, {0: [False] * 2, 1: [False] * 3}, total_ms=1.0)
    rs = load_runs([tmp_path])
    (row,) = robustness_table(rs, suite_table(rs)).itertuples()
    assert (row.perturbation, row.pairs, row.dense_only, row.method_only, row.drop_pp) == ("lan", 2, 2, 0, 100.0)


def test_table1_gains_perturbed_columns_and_keeps_the_papers_relative_accuracy(runs):
    table = method_table(load_runs([runs]))
    vla = table[table.method == "VLA-Pruner"].iloc[0]
    assert (vla.object, vla.object_swap, vla.spatial) == (80.0, 40.0, 100.0)
    assert list(table.columns[4:13]) == ["spatial", "spatial_ci_low", "spatial_ci_high", "object", "object_ci_low",
                                         "object_ci_high", "object_swap", "object_swap_ci_low", "object_swap_ci_high"]
    assert vla.relative_acc_pct == pytest.approx(100 * (1.0 + 0.8) / 2)  # libero_spatial and libero_object
    assert vla.relative_acc_perturbed_pct == pytest.approx(100 * 40 / 90)


def test_report_writes_the_robustness_table_and_the_drop_plot(runs, tmp_path):
    written = {p.name for p in write_report(load_runs([runs]), tmp_path)}
    assert {"robustness.csv", "robustness.md", "robustness.tex", "openvla_cuda_drop_vs_dense.png"} <= written
    assert list(pd.read_csv(tmp_path / "robustness.csv").perturbation) == ["none", "swap"]
    assert "dense_identity" not in pd.read_csv(tmp_path / "suites.csv").columns


def test_no_perturbed_suite_no_robustness_view(tmp_path):
    write_run(tmp_path, "libero_object", "none", 1.0, 7, {0: ALL}, total_ms=1.0)
    write_run(tmp_path, "libero_object", "vla", 0.5, 7, {0: ALL}, total_ms=1.0)
    rs = load_runs([tmp_path])
    assert robustness_table(rs, suite_table(rs)).empty
    assert "relative_acc_perturbed_pct" not in method_table(rs).columns
