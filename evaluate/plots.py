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
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from evaluate.report import DENSE_PRUNER, METHOD_NAMES  # noqa: E402
FORMATS = ("png", "pdf")
# x axis of each cost view: column of the suite table, axis label
COST_AXES = {
    "flops": ("prefill_tmacs_mean", "LLM prefill FLOPs (T, MACs as in the paper)"),
    "latency": ("latency_total_median_ms", "latency per query (ms, median, warm-up excluded)"),
}


def _panels(n: int):
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False, sharey=True)
    return fig, axes[0]


def palette(pruners) -> dict[str, dict]:
    """The same colour and name for a pruner in every figure: known pruners first, in the tables' order."""
    known = list(METHOD_NAMES)
    ordered = sorted(set(pruners), key=lambda p: (known.index(p) if p in known else len(known), p))
    return {p: {"color": f"C{i % 10}", "label": METHOD_NAMES.get(p, p)} for i, p in enumerate(ordered)}


def _errorbar(ax, rows: pd.DataFrame, x: str, style: dict, **extra):
    yerr = [rows.sr - rows.sr_ci_low, rows.sr_ci_high - rows.sr]
    ax.errorbar(rows[x], rows.sr, yerr=yerr, marker="o", capsize=3, **style, **extra)


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{stem}.{fmt}" for fmt in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def success_vs_retention(per_suite: pd.DataFrame, model: str, out_dir: Path, styles: dict) -> list[Path]:
    rows = per_suite[per_suite.model == model]
    suites = sorted(rows.suite.unique())
    fig, axes = _panels(len(suites))
    for ax, suite in zip(axes, suites):
        data = rows[rows.suite == suite]
        for pruner, g in data[data.pruner != DENSE_PRUNER].groupby("pruner"):
            _errorbar(ax, g.sort_values("keep").assign(retention=lambda d: 100 * d.keep), "retention", styles[pruner])
        for sr in data[data.pruner == DENSE_PRUNER].sr:
            ax.axhline(sr, linestyle="--", linewidth=1, **styles[DENSE_PRUNER])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(100 * rows[rows.pruner != DENSE_PRUNER].keep.unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
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


def success_vs_cost(per_suite: pd.DataFrame, model: str, device: str, axis: str, out_dir: Path,
                    styles: dict) -> list[Path]:
    x, xlabel = COST_AXES[axis]
    rows = per_suite[(per_suite.model == model) & (per_suite.device == device)].dropna(subset=[x])
    if rows.empty:
        return []
    suites = sorted(rows.suite.unique())
    fig, axes = _panels(len(suites))
    for ax, suite in zip(axes, suites):
        data = rows[rows.suite == suite]
        for pruner, g in data.groupby("pruner"):
            _errorbar(ax, g.sort_values(x), x, styles[pruner], linestyle="-" if len(g) > 1 else "none")
        front = pareto_front(data, x)
        ax.step(front[x], front.sr, where="post", color="grey", alpha=0.5, linewidth=3, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_title(suite)
    axes[0].set_ylabel("success rate (%)")
    axes[-1].legend(fontsize="small")
    return _save(fig, out_dir, f"{model}_{device}_success_vs_{axis}".replace(":", ""))


def write_plots(per_suite: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure for every model (and device) in the table."""
    paths, styles = [], palette(per_suite.pruner)
    for model in sorted(per_suite.model.unique()):
        paths += success_vs_retention(per_suite, model, out_dir, styles)
        for device in sorted(per_suite[per_suite.model == model].device.unique()):
            for axis in COST_AXES:
                paths += success_vs_cost(per_suite, model, device, axis, out_dir, styles)
    return paths
