"""Does offline fidelity predict the closed loop? `python -m evaluate.fidelity.success FIDELITY_CSV RUN_OR_ROOT...
--out DIR` matches each setting of a `fidelity.csv` with the closed-loop runs of the same model, suite, pruner
(group file and options, as run directories name them) and keep, and writes their Spearman rank correlation across
settings, the matched table (`fidelity_vs_success.csv/.md`) and a scatter plot (`fidelity_vs_success.png/.pdf`).

A good predictor ranks settings as success does: more action L1, less success, so rho near -1 (for agreement
measures, near +1). Spearman is computed on average ranks (ties share their mean rank). Closed-loop rows come from
the run tables (evaluate.analysis.report.suite_table: seeds pooled, 95% Wilson intervals); unfinished runs are left
out with a warning, and a setting with several different closed-loop experiments is an error, not a guess.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from evaluate.analysis.report import load_runs_for_cli, suite_table, write_table
from evaluate.analysis.runset import INCOMPLETE, RunSet
from evaluate.arguments import CommandParser, output_directory
from evaluate.config import pruner_tag

log = logging.getLogger(__name__)
SUCCESS_COLUMNS = ["sr", "sr_ci_low", "sr_ci_high", "episodes", "run_status"]
KEYS = ["model", "suite", "pruner", "keep"]  # what a setting is matched by


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks; NaN under 3 points or for a constant series."""
    ranks = pd.DataFrame({"x": x, "y": y}).dropna().rank()
    if len(ranks) < 3 or ranks.x.nunique() < 2 or ranks.y.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(ranks.x, ranks.y)[0, 1])


def closed_loop(rs: RunSet) -> pd.DataFrame:
    """One row per closed-loop experiment and suite: model, suite, pruner tag (run directories' naming), keep and
    success; unfinished runs left out with a warning."""
    table = suite_table(rs)
    unfinished = table[table.run_status == INCOMPLETE]
    for row in unfinished.itertuples():
        log.warning("%s %s keep %s on %s is unfinished (%s); left out", row.model, row.method, row.keep, row.suite,
                    row.completeness)
    table = table[table.run_status != INCOMPLETE]
    tags = []
    for identity in table.identity:
        model = rs.identities[identity].get("model") or {}
        tags.append(pruner_tag(dict(rs.identities[identity]["pruner"]), model.get("family"), model.get("name")))
    return table.assign(pruner=tags)[[*KEYS, "method", *SUCCESS_COLUMNS]]


def match(fidelity: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The fidelity rows with the success of their closed-loop runs (model, suite, pruner, keep equal); a setting
    several experiments match is a ValueError naming it."""
    doubled = runs[runs.duplicated(KEYS, keep=False)]
    if len(doubled):
        first = doubled.iloc[0]
        raise ValueError(f"{len(doubled[(doubled[KEYS] == first[KEYS]).all(axis=1)])} different closed-loop "
                         f"experiments for {first.model} {first.pruner} keep {first.keep} on {first.suite} (other "
                         "options, step limits or checkpoints); pass the run directories of one per setting")
    # columns both sides have (method; episodes, which in fidelity.csv counts demos replayed): the runs' are reported
    shared = [c for c in fidelity if c in runs and c not in KEYS]
    return fidelity.drop(columns=shared).merge(runs, on=KEYS, how="inner")


def scatter(table: pd.DataFrame, measure: str, rho: float, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from evaluate.analysis.plots import legend_below, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (pruner, rows) in enumerate(table.groupby("pruner", sort=False)):
        errors = [(rows.sr - rows.sr_ci_low).clip(lower=0), (rows.sr_ci_high - rows.sr).clip(lower=0)]
        ax.errorbar(rows[measure], rows.sr, yerr=errors, marker="o", linestyle="none", capsize=3,
                    color=f"C{i % 10}", label=rows.method.iloc[0])
        for row in rows.itertuples():
            ax.annotate(format(row.keep, "g"), (getattr(row, measure), row.sr), fontsize="x-small",
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"offline {measure} (to dense)")
    ax.set_ylabel("closed-loop success rate (%)")
    ax.set_title(f"Spearman rho = {rho:.3f} over {len(table)} settings", fontsize="medium")
    ax.grid(alpha=0.3)
    legend_below(fig, [ax])
    return save_figure(fig, out_dir, "fidelity_vs_success")


def read_fidelity(fidelity_csv: Path, measure: str) -> pd.DataFrame:
    """The fidelity table, refused (ValueError, one line) when it is not one (unreadable, without the columns a
    setting is matched by) or when `measure` is not one of its numeric columns."""
    try:
        fidelity = pd.read_csv(fidelity_csv)
    except (ValueError, UnicodeDecodeError) as e:  # empty, not CSV, not text
        raise ValueError(f"{fidelity_csv} is not a fidelity.csv of python -m evaluate.fidelity ("
                         f"{' '.join(str(e).split())})") from None
    missing = [key for key in KEYS if key not in fidelity]
    if missing:
        raise ValueError(f"{fidelity_csv} is not a fidelity.csv of python -m evaluate.fidelity (no column "
                         f"{', '.join(missing)})")
    numeric = [c for c in fidelity.select_dtypes("number") if c not in ("keep", "episodes")]
    if measure not in numeric:
        problem = f"'s column '{measure}' is not numeric" if measure in fidelity else f" has no column '{measure}'"
        raise ValueError(f"{fidelity_csv}{problem}; valid measures: {', '.join(numeric)}")
    return fidelity


def fidelity_vs_success(fidelity_csv: Path, run_paths: list[str], out_dir: Path,
                        measure: str = "action_l1") -> tuple[float, pd.DataFrame, list[Path]]:
    """rho, the matched table and the files written."""
    fidelity = read_fidelity(fidelity_csv, measure)
    table = match(fidelity, closed_loop(load_runs_for_cli(run_paths)))
    if table.empty:
        raise ValueError(f"no closed-loop run matches a setting of {fidelity_csv} (same model, suite, pruner and "
                         "keep)")
    rho = spearman(table[measure], table.sr)
    shown = table[["model", "suite", "pruner", "keep", "method", measure, *SUCCESS_COLUMNS]]
    caption = (f"Offline {measure} against closed-loop success (%, 95% Wilson interval) for the settings both hold: "
               f"Spearman rho = {rho:.3f} over {len(table)} settings")
    paths = write_table(shown, out_dir, "fidelity_vs_success", caption, digits=4)
    return rho, shown, [*paths, *scatter(table, measure, rho, out_dir)]


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(prog="python -m evaluate.fidelity.success", description=__doc__.split("\n\n")[0])
    parser.add_argument("fidelity_csv", type=Path, help="a fidelity.csv of python -m evaluate.fidelity")
    parser.add_argument("runs", nargs="+", help="closed-loop run directories or directories above them")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where the table and the plot go")
    parser.add_argument("--measure", default="action_l1", help="the fidelity column to rank by (action_l1)")
    args = parser.parse_args(argv)
    if not args.fidelity_csv.is_file():
        raise SystemExit(f"error: no such fidelity table: {args.fidelity_csv}")
    output_directory(args.out)
    try:
        rho, table, paths = fidelity_vs_success(args.fidelity_csv, args.runs, args.out, args.measure)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"Spearman rho = {rho:.3f} over {len(table)} settings ({args.measure} against success)")
    print(*paths, sep="\n")


if __name__ == "__main__":
    main()
