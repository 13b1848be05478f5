"""Figures from the per-suite table (evaluate.report.suite_table): success vs retention per pruner, and
success vs FLOPs and vs latency with the Pareto front (the best success at no more cost). PNG + PDF.

One figure per model (and device, for latency), one panel per suite; error bars are 95% Wilson intervals.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

DENSE_PRUNER = "none"
FORMATS = ("png", "pdf")
# x axis of each cost view: column of the suite table, axis label
COST_AXES = {
    "flops": ("prefill_tmacs_mean", "LLM prefill FLOPs (T, MACs as in the paper)"),
    "latency": ("latency_total_median_ms", "latency per query (ms, median, warm-up excluded)"),
}


def _panels(n: int):
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False, sharey=True)
    return fig, axes[0]


def _errorbar(ax, rows: pd.DataFrame, x: str, label: str, **style):
    yerr = [rows.sr - rows.sr_ci_low, rows.sr_ci_high - rows.sr]
    ax.errorbar(rows[x], rows.sr, yerr=yerr, label=label, marker="o", capsize=3, **style)


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{stem}.{fmt}" for fmt in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def success_vs_retention(per_suite: pd.DataFrame, model: str, out_dir: Path) -> list[Path]:
    rows = per_suite[per_suite.model == model]
    suites = sorted(rows.suite.unique())
    fig, axes = _panels(len(suites))
    for ax, suite in zip(axes, suites):
        data = rows[rows.suite == suite]
        for pruner, g in data[data.pruner != DENSE_PRUNER].groupby("pruner"):
            _errorbar(ax, g.sort_values("keep").assign(retention=lambda d: 100 * d.keep), "retention", pruner)
        for sr in data[data.pruner == DENSE_PRUNER].sr:
            ax.axhline(sr, color="k", linestyle="--", linewidth=1, label="dense")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("visual tokens kept (%)")
        ax.set_title(suite)
    axes[0].set_ylabel("success rate (%)")
    axes[-1].legend(fontsize="small")
    return _save(fig, out_dir, f"{model}_success_vs_retention")


def pareto_front(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Points no other point beats on both cost (lower x) and success (higher sr)."""
    ordered = points.dropna(subset=[x, "sr"]).sort_values([x, "sr"], ascending=[True, False])
    front, best = [], float("-inf")
    for _, row in ordered.iterrows():
        if row.sr > best:
            front.append(row)
            best = row.sr
    return pd.DataFrame(front)


def success_vs_cost(per_suite: pd.DataFrame, model: str, device: str, axis: str, out_dir: Path) -> list[Path]:
    x, xlabel = COST_AXES[axis]
    rows = per_suite[(per_suite.model == model) & (per_suite.device == device)].dropna(subset=[x])
    if rows.empty:
        return []
    suites = sorted(rows.suite.unique())
    fig, axes = _panels(len(suites))
    for ax, suite in zip(axes, suites):
        data = rows[rows.suite == suite]
        for pruner, g in data.groupby("pruner"):
            _errorbar(ax, g.sort_values(x), x, pruner, linestyle="-" if len(g) > 1 else "none")
        front = pareto_front(data, x)
        ax.step(front[x], front.sr, where="post", color="grey", alpha=0.5, linewidth=3, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_title(suite)
    axes[0].set_ylabel("success rate (%)")
    axes[-1].legend(fontsize="small")
    return _save(fig, out_dir, f"{model}_{device}_success_vs_{axis}".replace(":", ""))


def write_plots(per_suite: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure for every model (and device) in the table."""
    paths = []
    for model in sorted(per_suite.model.unique()):
        paths += success_vs_retention(per_suite, model, out_dir)
        for device in sorted(per_suite[per_suite.model == model].device.unique()):
            for axis in COST_AXES:
                paths += success_vs_cost(per_suite, model, device, axis, out_dir)
    return paths
