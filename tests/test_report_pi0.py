"""The paper's Table 4 layout (pi0) from run directories: rows dense / 50 / 25 / 12.5% retention, success per suite
and their average, FLOPs as % of dense computed from the per-layer prefix tokens each query recorded, latency and
speedup; and scripts/collect.py putting the paper's Table 4 numbers beside ours."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from vla_pruner.models.pi0.cost import pi0_macs
from evaluate.analysis.report import load_runs, pi0_table, write_report
from tests.conftest import REPO
from tests.test_report import write_run
from vla_pruner.models.pi0.config import REAL_PI0

CUT = 3  # the real pi0's default prune layer
MS = {1.0: 100.0, 0.5: 70.0, 0.25: 60.0, 0.125: 50.0}  # latency per query, by keep


def pi0_query(kept: int, total_ms: float, warmup: bool = False) -> dict:
    """A query as the pi0 policy records it: two valid cameras of 256 tokens, 560 prefix tokens until the cut (the
    empty camera is left out of the prefix), then the kept tokens of both cameras + 48 language slots."""
    depth = REAL_PI0.vlm.depth
    tokens = [560] * depth if kept == 256 else [560] * CUT + [2 * kept + 48] * (depth - CUT)
    return {"latency_ms": {"vision": 0.1 * total_ms, "prefill": 0.6 * total_ms, "decode": 0.3 * total_ms,
                           "total": total_ms},
            "warmup": warmup, "visual_tokens": 512, "kept_visual": 2 * kept, "prefill_tokens": tokens,
            "decode_steps": 0, "selection_ms": 0.1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pi0_runs")
    outcomes = {"libero_spatial": {1.0: [True] * 4, 0.5: [True] * 4, 0.25: [True, True, True, False],
                                   0.125: [True, False, True, False]},
                "libero_object": {1.0: [True, True, True, False], 0.5: [True] * 4, 0.25: [True] * 4,
                                  0.125: [False] * 4}}
    for suite, by_keep in outcomes.items():
        for keep, successes in by_keep.items():
            pruner = "none" if keep == 1.0 else "vla"
            write_run(root, suite, pruner, keep, 7, {0: successes[:2], 1: successes[2:]}, MS[keep], model="pi0",
                      family="pi0", query=pi0_query, warmup_ms=None if keep == 1.0 else 110.0)
    write_run(root, "libero_spatial", "none", 1.0, 7, {0: [True, False]}, 200.0)  # an OpenVLA run: not in Table 4
    return root


def test_table4_rows_average_flops_ratio_and_speedup(runs):
    table = pi0_table(load_runs([runs]))
    assert list(table.model.unique()) == ["pi0"]
    assert list(zip(table.retention_pct, table.method)) == [(100.0, "Dense"), (50.0, "VLA-Pruner"),
                                                           (25.0, "VLA-Pruner"), (12.5, "VLA-Pruner")]
    row = table.set_index("retention_pct")
    assert row.avg_sr[25.0] == pytest.approx((75.0 + 100.0) / 2) and row.avg_sr[100.0] == pytest.approx(87.5)
    assert row.avg_sr[12.5] == pytest.approx(25.0)
    dense = pi0_macs(REAL_PI0)
    for keep in (0.5, 0.25, 0.125):
        pruned = pi0_macs(REAL_PI0, round(keep * 256), CUT)  # warm-up queries excluded: the paper's convention
        assert row.flops_ratio_pct_pruned[100 * keep] == pytest.approx(100 * pruned.prefix / dense.prefix)
        # the headline is the episode's: each episode's first of 3 queries is its dense warm-up
        episode = lambda part: (getattr(dense, part) + 2 * getattr(pruned, part)) / 3  # noqa: E731
        assert row.flops_ratio_pct[100 * keep] == pytest.approx(100 * episode("prefix") / dense.prefix)
        assert row.full_flops_ratio_pct[100 * keep] == pytest.approx(100 * episode("total") / dense.total)
        assert row.speedup[100 * keep] == pytest.approx(MS[1.0] / MS[keep])
    assert row.flops_ratio_pct[100.0] == 100.0
    assert row.flops_ratio_pct_pruned[50.0] == pytest.approx(60.9, abs=1.5)  # the paper's Table 4 convention


def test_report_writes_table4_only_with_pi0_runs(runs, tmp_path):
    written = {p.name for p in write_report(load_runs([runs]), tmp_path)}
    assert {"table4.csv", "table4.md", "table4.tex"} <= written
    assert "Table 4 layout (pi0)" in (tmp_path / "table4.md").read_text()


def test_collect_puts_the_papers_table4_beside_ours(runs, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "collect.py"), str(runs), "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "table4_vs_paper.csv").set_index("retention_pct")
    assert list(table.method) == ["Dense", "VLA-Pruner", "VLA-Pruner", "VLA-Pruner"]
    assert table.avg_sr_paper[50.0] == 95.07 and table.avg_sr[50.0] == 100.0
    assert table.avg_sr_diff[50.0] == pytest.approx(100.0 - 95.07)
    assert table.flops_ratio_pct_pruned_paper[50.0] == 60.9 and table.speedup_paper[50.0] == pytest.approx(104.53 / 69.45)
    assert table.relative_acc_pct_paper[12.5] == 88.36
    assert {"spatial", "object", "full_flops_ratio_pct", "speedup"} <= set(table.columns)
    assert "table4_vs_paper.md" in result.stdout and (tmp_path / "table1_vs_paper.csv").is_file()
