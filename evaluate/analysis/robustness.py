"""Pruning under perturbation: each pruner's drop in success relative to the dense model on the same suite, on
LIBERO-PRO's perturbed suites beside their unperturbed base suite, with a paired test per init state.

A row is one pruned row of the per-suite table (analysis/report.suite_table: one experiment, seeds pooled) on a
suite of a base-suite group that holds at least one perturbed suite. Its reference is the same dense row that
relative accuracy uses (same identity but for the pruner and keep; never an incomplete run). Definitions:
- drop_pp = dense SR - method SR, in percentage points, over all attempted episodes of each;
- paired: the episodes both ran (same seed, task and init state: the same scene and start), `pairs` of them;
  `dense_only` = solved by dense and not by the method, `method_only` the other way; paired_drop_pp =
  100 x (dense_only - method_only) / pairs; p_value = two-sided exact McNemar test on those two counts
  (analysis/stats.py). Init states differ between a perturbed suite and its base, so the perturbed and the
  unperturbed drops stand side by side, each tested against its own dense run.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from evaluate.analysis.labels import DENSE_PRUNER, PERTURBED, method_order
from evaluate.analysis.plots import legend_below, panels, save_figure
from evaluate.analysis.runset import RunSet
from evaluate.analysis.stats import attempted, mcnemar_exact

UNPERTURBED = "none"
PAIR_KEYS = ["seed", "task_id", "init_index"]
ROBUSTNESS_NOTE = ("drop_pp = dense SR - method SR (percentage points) on the same suite; paired over the episodes "
                   "both ran (same seed, task, init state): dense_only / method_only = solved by one only, "
                   "paired_drop_pp = 100 x (dense_only - method_only) / pairs, p_value = two-sided exact McNemar; "
                   "perturbation none = the unperturbed base suite")


def _episodes(rs: RunSet, identity: str, status: str) -> pd.DataFrame:
    mine = rs.episodes[(rs.episodes.experiment == identity) & (rs.episodes.run_status == status)]
    return attempted(mine)[[*PAIR_KEYS, "success"]]


def paired_stats(method: pd.DataFrame, dense: pd.DataFrame) -> dict:
    """Paired counts, drop and McNemar p over the (seed, task, init state) episodes both ran."""
    both = method.merge(dense, on=PAIR_KEYS, suffixes=("", "_dense"))
    dense_only = int((both.success_dense.astype(bool) & ~both.success.astype(bool)).sum())
    method_only = int((~both.success_dense.astype(bool) & both.success.astype(bool)).sum())
    pairs = len(both)
    return {"pairs": pairs, "dense_only": dense_only, "method_only": method_only,
            "paired_drop_pp": 100 * (dense_only - method_only) / pairs if pairs else float("nan"),
            "p_value": mcnemar_exact(dense_only, method_only) if pairs else float("nan")}


def robustness_table(rs: RunSet, per_suite: pd.DataFrame) -> pd.DataFrame:
    """One row per pruned suite-table row in a base-suite group with a perturbed suite; empty without one."""
    base_of = {name: row.base for name, row in PERTURBED.items()}
    table = per_suite.assign(base_suite=per_suite.suite.map(lambda s: base_of.get(s, s)),
                             perturbation=per_suite.suite.map(lambda s: PERTURBED[s].perturbation
                                                              if s in PERTURBED else UNPERTURBED))
    groups = set(table[table.perturbation != UNPERTURBED].base_suite)
    table = table[table.base_suite.isin(groups) & (table.pruner != DENSE_PRUNER) & table.dense_identity.notna()]
    rows = []
    for _, row in table.iterrows():
        paired = paired_stats(_episodes(rs, row.identity, row.run_status),
                              _episodes(rs, row.dense_identity, row.dense_status))
        rows.append({"model": row.model, "device": row.device, "method": row.method, "keep": row.keep,
                     "base_suite": row.base_suite, "perturbation": row.perturbation, "suite": row.suite,
                     "dense_sr": row.dense_sr, "sr": row.sr, "drop_pp": row.dense_sr - row.sr, **paired,
                     "episodes": row.episodes, "completeness": row.completeness, "run_status": row.run_status,
                     "settings": row.settings, "pruner": row.pruner})
    if not rows:
        return pd.DataFrame()
    order = {UNPERTURBED: -1, **{p.perturbation: i for i, p in enumerate(PERTURBED.values())}}
    out = pd.DataFrame(rows).assign(_method=lambda d: d.pruner.map(method_order), _keep=lambda d: -d.keep,
                                    _perturbation=lambda d: d.perturbation.map(order))
    keys = ["model", "device", "_method", "method", "settings", "_keep", "base_suite", "_perturbation"]
    return out.sort_values(keys, ignore_index=True, kind="stable").drop(
        columns=["_method", "_keep", "_perturbation", "pruner"])


def drop_plots(robust: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per model and device: one panel per base suite, the paired drop per perturbation (unperturbed first), one
    series per method and keep; filled markers where the paired test gives p < 0.05."""
    paths = []
    for (model, device), rows in robust.groupby(["model", "device"], sort=True):
        bases = sorted(rows.base_suite.unique())
        fig, axes = panels(len(bases))
        series = rows.assign(series=[f"{m} [{s}] {100 * k:g}%" if s else f"{m} {100 * k:g}%"
                                     for m, s, k in zip(rows.method, rows.settings, rows.keep)])
        colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(series.series))}
        for ax, base in zip(axes, bases):
            mine = series[series.base_suite == base]
            ticks = list(dict.fromkeys(mine.perturbation))
            for name, g in mine.groupby("series", sort=False):
                x = [ticks.index(p) for p in g.perturbation]
                ax.plot(x, g.paired_drop_pp, color=colours[name], label=name, linewidth=1)
                significant = g.p_value < 0.05
                ax.scatter([v for v, s in zip(x, significant) if s], g.paired_drop_pp[significant],
                           color=colours[name], zorder=3)
                ax.scatter([v for v, s in zip(x, significant) if not s], g.paired_drop_pp[~significant],
                           facecolors="none", edgecolors=colours[name], zorder=3)
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xticks(range(len(ticks)), ticks, rotation=45)
            ax.set_xlabel("perturbation")
            ax.set_title(base)
        axes[0].set_ylabel("paired drop vs dense (pp)\nfilled: p < 0.05")
        legend_below(fig, axes)
        paths += save_figure(fig, out_dir, f"{model}_{device}_drop_vs_dense".replace(":", ""))
    plt.close("all")
    return paths
