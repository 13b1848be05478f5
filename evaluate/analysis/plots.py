"""Figures from the per-suite table (evaluate.analysis.report.suite_table): success vs retention per method, and
success vs FLOPs and vs latency with the Pareto front (the best success at no more cost). PNG + PDF.

One figure per model (and device, for latency), one panel per suite; error bars are 95% Wilson intervals.
One series per table row label: the method with its changed options, the `settings` that tell look-alike
experiments apart, and "(incomplete)" for runs that are not finished, so variants and partial runs never share
a line.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from evaluate.analysis.labels import DENSE_PRUNER, method_order  # noqa: E402
from evaluate.analysis.runset import INCOMPLETE  # noqa: E402

FORMATS = ("png", "pdf")
# x axis of each cost view: column of the suite table, axis label
COST_AXES = {
    "flops": ("prefill_tmacs_mean", "LLM prefill FLOPs (T, MACs), mean per query over episodes"),
    "latency": ("latency_total_median_ms", "latency per query (ms, median, warm-up excluded)"),
}


def panels(n: int):
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False, sharey=True)
    return fig, axes[0]


def series_label(row) -> str:
    """What a suite-table row is called in a legend."""
    label = f"{row.method} [{row.settings}]" if row.settings else row.method
    return f"{label} (incomplete)" if row.run_status == INCOMPLETE else label


def with_series(per_suite: pd.DataFrame) -> pd.DataFrame:
    return per_suite.assign(series=[series_label(row) for row in per_suite.itertuples()])


def palette(rows: pd.DataFrame) -> dict[str, dict]:
    """The same colour and name for a series in every figure: known pruners first, in the tables' order."""
    ordered = sorted(set(zip(rows.pruner.map(method_order), rows.series)))
    return {series: {"color": f"C{i % 10}", "label": series} for i, (_, series) in enumerate(ordered)}


def error_bars(rows: pd.DataFrame) -> list[pd.Series]:
    """Lower and upper error bar lengths; never negative (a 0% or 100% rate sits on its interval's bound, and
    100 * k / n and 100 * bound can differ in the last bit)."""
    return [(rows.sr - rows.sr_ci_low).clip(lower=0.0), (rows.sr_ci_high - rows.sr).clip(lower=0.0)]


def _errorbar(ax, rows: pd.DataFrame, x: str, style: dict, **extra):
    ax.errorbar(rows[x], rows.sr, yerr=error_bars(rows), marker="o", capsize=3, **style, **extra)


def legend_below(fig, axes) -> None:
    """One legend for every panel, below them, so that it never covers a point; lays the figure out."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not handles:
        fig.tight_layout()
        return
    columns = min(3, len(handles))
    rows = -(-len(handles) // columns)
    fig.set_figheight(fig.get_figheight() + 0.25 * rows)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=columns, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.25 * rows / fig.get_figheight() + 0.02, 1, 1))


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """PNG and PDF of `fig`, laid out already (`legend_below`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{fmt}" for fmt in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")  # the legend below may be wider than the panels
    plt.close(fig)
    return paths


def success_vs_retention(per_suite: pd.DataFrame, model: str, out_dir: Path, styles: dict) -> list[Path]:
    rows = per_suite[per_suite.model == model]
    suites = sorted(rows.suite.unique())
    fig, axes = panels(len(suites))
    for ax, suite in zip(axes, suites):
        data = rows[rows.suite == suite]
        for series, g in data[data.pruner != DENSE_PRUNER].groupby("series"):
            _errorbar(ax, g.sort_values("keep").assign(retention=lambda d: 100 * d.keep), "retention", styles[series])
        for _, dense in data[data.pruner == DENSE_PRUNER].iterrows():
            ax.axhline(dense.sr, linestyle="--", linewidth=1, **styles[dense.series])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(100 * rows[rows.pruner != DENSE_PRUNER].keep.unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("visual tokens kept (%)")
        ax.set_title(suite)
    axes[0].set_ylabel("success rate (%)")
    legend_below(fig, axes)
    return save_figure(fig, out_dir, f"{model}_success_vs_retention")


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
    if axis == "flops" and rows[x].max() < 0.1:  # a small model (openvla_oft_small: 0.0017 T): in G, readable ticks
        rows, xlabel = rows.assign(**{x: rows[x] * 1000}), xlabel.replace("(T,", "(G,")
    suites = sorted(rows.suite.unique())
    fig, axes = panels(len(suites))
    for ax, suite in zip(axes, suites):
        data = rows[rows.suite == suite]
        for series, g in data.groupby("series"):
            _errorbar(ax, g.sort_values(x), x, styles[series], linestyle="-" if len(g) > 1 else "none")
        front = pareto_front(data, x)
        ax.step(front[x], front.sr, where="post", color="grey", alpha=0.5, linewidth=3, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_title(suite)
    axes[0].set_ylabel("success rate (%)")
    legend_below(fig, axes)
    return save_figure(fig, out_dir, f"{model}_{device}_success_vs_{axis}".replace(":", ""))


def write_plots(per_suite: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure for every model (and device) in the table."""
    per_suite = with_series(per_suite)
    paths, styles = [], palette(per_suite)
    for model in sorted(per_suite.model.unique()):
        paths += success_vs_retention(per_suite, model, out_dir, styles)
        for device in sorted(per_suite[per_suite.model == model].device.unique()):
            for axis in COST_AXES:
                paths += success_vs_cost(per_suite, model, device, axis, out_dir, styles)
    return paths
