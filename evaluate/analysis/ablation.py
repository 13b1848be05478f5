"""The ablation view: one row per experiment of a set of runs (one model and suite per row: evaluate.analysis.report's
per-suite rows), the settings an ablation varies in columns of their own (dense warm-up, cut K, the pruner's other
changed options), success with its Wilson interval, what an episode costs and what a pruned query costs, and the
paired test against FastV at the same keep, warm-up and cut (analysis/paired.py).

`python -m evaluate.ablation RUN_OR_ROOT... --out DIR` writes ablation.{csv,md,tex} and ablation.{png,pdf}: per
retention, each row's success (95% Wilson interval) against its episode cost.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from evaluate.analysis.labels import DENSE_PRUNER
from evaluate.analysis.paired import MATCHED, NOTE as PAIRED_NOTE
from evaluate.analysis.plots import legend_below, palette, panels, save_figure, with_series
from evaluate.analysis.report import load_runs_for_cli, suite_table, write_table
from evaluate.analysis.runset import RunSet, flatten
from evaluate.arguments import CommandParser, output_directory
from evaluate.config import pruner_tag

COLUMNS = ["model", "suite", "method", "options", "keep", "dense_warmup", "prune_layer", "episodes", "successes",
           "success_rate", "wilson_low", "wilson_high", "prefill_tmacs", "prefill_tmacs_pruned", "kept_visual",
           "vs_fastv_pairs", "vs_fastv_only", "fastv_only", "p_vs_fastv", "vs_fastv", "completeness", "run_status"]
CAPTION = ("Ablation: success (%) with 95% Wilson interval; prefill_tmacs = the episode's cost, the analytic LLM "
           "prefill in TMACs averaged over every query (dense warm-up included), prefill_tmacs_pruned = the same over "
           "the pruned queries only (the paper's convention); options = the pruner's options that differ from its "
           "defaults; dense_warmup and prune_layer as run (the model's defaults where the pruner has none); "
           f"{PAIRED_NOTE}")


def _options(flat: dict) -> str:
    """The pruner's changed options but the ones that have columns of their own."""
    pruner = {k.removeprefix("pruner."): v for k, v in flat.items() if k.startswith("pruner.")}
    _, *changed = pruner_tag(pruner, flat.get("model.family"), flat.get("model.name")).split(",")
    return ", ".join(c for c in changed if c.split("=")[0] not in MATCHED)


def ablation_table(rs: RunSet) -> pd.DataFrame:
    table = suite_table(rs)
    flats = {e: flatten(rs.identities[e]) for e in table.identity}
    table = table.assign(
        options=[_options(flats[i]) for i in table.identity],
        dense_warmup=[flats[i].get("pruner.dense_warmup", 0) for i in table.identity],
        prune_layer=[flats[i].get("pruner.prune_layer") for i in table.identity],
        success_rate=table.sr, wilson_low=table.sr_ci_low, wilson_high=table.sr_ci_high,
        prefill_tmacs=table.prefill_tmacs_mean, prefill_tmacs_pruned=table.prefill_tmacs_mean_pruned,
        kept_visual=table.kept_visual_mean)
    table.loc[table.pruner == DENSE_PRUNER, ["dense_warmup", "prune_layer"]] = None
    return table[COLUMNS + ["pruner", "settings", "device"]]


def ablation_plot(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One panel per retention: every row's success (95% Wilson interval) against its episode cost, dense as a
    dashed line; the row's method and options in the legend."""
    rows = with_series(table.assign(sr=table.success_rate, sr_ci_low=table.wilson_low, sr_ci_high=table.wilson_high,
                                    run_status=table.run_status))
    rows["series"] = [f"{s} [{o}]" if o and o not in s else s for s, o in zip(rows.series, rows.options)]
    styles = palette(rows)
    keeps = sorted(rows[rows.pruner != DENSE_PRUNER].keep.unique(), reverse=True)
    fig, axes = panels(max(1, len(keeps)))
    fig.set_size_inches(5.5 * len(axes), 5.0)
    dense = rows[rows.pruner == DENSE_PRUNER]
    for ax, keep in zip(axes, keeps):
        for _, row in rows[(rows.keep == keep) & (rows.pruner != DENSE_PRUNER)].iterrows():
            ax.errorbar([1000 * row.prefill_tmacs], [row.sr], capsize=3, marker="o", linestyle="none",
                        yerr=[[max(0.0, row.sr - row.sr_ci_low)], [max(0.0, row.sr_ci_high - row.sr)]],
                        **styles[row.series])
        for _, row in dense.iterrows():
            ax.axhline(row.sr, linestyle="--", linewidth=1, color="grey")
        ax.set_title(f"keep {keep:g}")
        ax.set_xlabel("prefill GMACs per query, episode mean (dense queries included)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate (%), 95% Wilson interval; dashed: dense")
    legend_below(fig, axes)
    return save_figure(fig, out_dir, "ablation")


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(prog="python -m evaluate.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or directories above them (e.g. runs/)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where the table and the plot go")
    args = parser.parse_args(argv)
    out = output_directory(args.out)
    table = ablation_table(load_runs_for_cli(args.runs))
    paths = write_table(table.drop(columns=["pruner"]), out, "ablation", CAPTION)
    for path in [*paths, *ablation_plot(table, out)]:
        print(path)
