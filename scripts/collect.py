"""Our runs in the paper's Table 1 layout (and, with pi0 runs, its Table 4 layout), with the paper's numbers beside
them and the difference.

    python scripts/collect.py runs/ [more run dirs or roots] --out results/table1 [--paper PATH] [--paper-pi0 PATH]

Rows: model x retention x method (the paper's rows of every model we have runs of, plus ours); only our rows of
the paper's model (`paper_model`: its published architecture) are set beside the paper's, and every row names its
checkpoint; columns per suite: ours, paper, ours - paper (success rate, %), the same for relative accuracy and for
the prefill FLOPs in the paper's convention (our `prefill_tmacs_pruned`, the mean over the pruned queries, TMACs =
the paper's "FLOPs (T)", beside its `flops_t`; our headline `prefill_tmacs`, the mean over every query of an episode,
follows), then our latency and the paper's (RTX 4090: compare only the trend), and how
each of our rows was made: seeds pooled, completeness (episodes done / wanted), settings. Our rows are
evaluate.analysis.report's Table 1 rows (one per experiment, never pooled across pruner options, step limits or
checkpoints; incomplete runs are rows of their own): a variant such as `VLA-Pruner (criterion=semantic_only)`
has no paper row and stands alone.
Writes table1_vs_paper.{csv,md,tex} and prints the Markdown. With runs of a pi0-family model it also writes
table4_vs_paper.{csv,md,tex}: per retention and method our success per suite, then ours / paper / ours - paper for
the average success, relative accuracy and FLOPs as % of dense (prefix, the paper's convention), our end-to-end
FLOPs ratio, latency and speedup beside the paper's (RTX 4090; speedup = its dense latency / its latency).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluate.analysis.labels import SUITE_COLUMNS, paper_row  # noqa: E402
from evaluate.arguments import CommandParser, output_directory  # noqa: E402
from evaluate.analysis.report import (PI0_NOTE, RELATIVE_ACC_NOTE, ROWS_NOTE, load_runs_for_cli,  # noqa: E402
                                      method_table, pi0_table, write_table)

DEFAULT_PAPER = REPO / ".." / "shared" / "reference" / "paper_table1_libero.csv"
DEFAULT_PAPER_PI0 = REPO / ".." / "shared" / "reference" / "paper_table4_pi0.csv"
ROW_KEYS = ["model", "retention_pct", "method"]
# the paper counts FLOPs over the pruned queries only: compared in that convention, our episode mean after
COMPARED = ["spatial", "object", "goal", "long", "relative_acc_pct", "prefill_tmacs_pruned"]
PAPER_COLUMNS = {"flops_t": "prefill_tmacs_pruned"}  # the paper's column -> ours, compared under our name
AFTER = ["prefill_tmacs", "latency_ms", "latency_ms_rtx4090", "episodes", "seeds", "completeness", "run_status",
         "settings"]
# Table 4 (pi0): our suite columns first, then these compared, then the rest
COMPARED_PI0 = ["avg_sr", "relative_acc_pct", "flops_ratio_pct_pruned"]
PAPER_COLUMNS_PI0 = {"flops_ratio_pct": "flops_ratio_pct_pruned"}
AFTER_PI0 = ["flops_ratio_pct", "full_flops_ratio_pct", "prefill_tmacs", "full_tmacs", "latency_ms", "speedup",
             "latency_ms_rtx4090", "speedup_paper", "episodes", "seeds", "completeness", "run_status", "settings"]


def read_paper(path: Path, option: str, compared: list[str], renamed: dict[str, str]) -> pd.DataFrame:
    """The paper's table with its columns under our names (`renamed`: the paper's -> ours); a file that is not that
    table is one error line naming it."""
    ours_to_paper = {v: k for k, v in renamed.items()}
    columns = [*ROW_KEYS, *(ours_to_paper.get(c, c) for c in compared), "latency_ms_rtx4090"]
    expected = f"a CSV with columns {', '.join(columns)}"
    if not path.is_file():
        raise SystemExit(f"error: the paper's table is not at {path.resolve()}; pass {option} PATH ({expected})")
    try:  # every column but the names is a number
        paper = pd.read_csv(path)
        paper[paper.columns.difference(["model", "method"])] = paper[paper.columns.difference(["model", "method"])
                                                                     ].apply(pd.to_numeric)
    except ValueError as e:  # not CSV, not text, empty, a word where a number belongs
        problem = "unreadable: " + (" ".join(str(e).split()) or type(e).__name__)
    else:
        missing = [c for c in columns if c not in paper]
        if not missing:
            return paper.rename(columns=renamed)
        problem = f"no column(s) {', '.join(missing)}"
    raise SystemExit(f"error: {option} {path} is not the paper's table ({problem}); expected {expected}")


def compare(ours: pd.DataFrame, paper: pd.DataFrame, compared: list[str] = COMPARED, before: list[str] = (),
            after: list[str] = AFTER) -> pd.DataFrame:
    """Outer join on (model, retention, method) of our rows of the paper's models (`paper_model`: another
    checkpoint loaded under the model's name is a row of its own, never set beside the paper's) with the paper's rows
    of the models we ran so; `before` columns (ours), then per compared column: ours, paper, diff; then `after`. Both
    readings of VLA-Pruner (the paper's defaults, `pruner=vla`; the released code, `pruner=vla_released`) are
    compared with the paper's VLA-Pruner row, the `reading` column says which a row is."""
    paired, alone = ours[ours.paper_model], ours[~ours.paper_model]
    paper = paper[paper.model.isin(paired.model.unique())]
    paper = paper.reindex(columns=[*paper.columns, *(c for c in compared if c not in paper)])  # e.g. no FLOPs
    paper = paper.rename(columns={"method": "paper_method", **{c: f"{c}_paper" for c in compared}})
    paired = paired.assign(paper_method=[paper_row(m)[0] for m in paired.method],
                           reading=[paper_row(m)[1] for m in paired.method])
    merged = paired.reindex(columns=[*paired.columns, *(c for c in compared if c not in paired)])
    merged = merged.merge(paper, on=["model", "retention_pct", "paper_method"], how="outer")
    merged["method"] = merged.method.fillna(merged.paper_method)  # the paper's rows we did not run
    merged = pd.concat([merged, alone.assign(reading="not the paper's model")], ignore_index=True)
    columns = [*ROW_KEYS, "reading", "checkpoint", "device", *before]
    for col in compared:
        merged[f"{col}_diff"] = merged[col] - merged[f"{col}_paper"]
        extra = [c for c in (f"{col}_ci_low", f"{col}_ci_high") if c in merged]
        columns += [col, *extra, f"{col}_paper", f"{col}_diff"]
    merged = merged.reindex(columns=columns + list(after))
    order = list(dict.fromkeys([*paper.paper_method, *ours.method]))  # the paper's row order, our extra ones after
    return merged.sort_values(["model", "retention_pct", "method"], ascending=[True, False, True], ignore_index=True,
                              key=lambda c: c.map(order.index) if c.name == "method" else c)


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or directories above them")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--paper", type=Path, default=DEFAULT_PAPER, help="the paper's Table 1 as CSV")
    parser.add_argument("--paper-pi0", type=Path, default=DEFAULT_PAPER_PI0, help="the paper's Table 4 (pi0) as CSV")
    args = parser.parse_args(argv)
    output_directory(args.out)
    paper = read_paper(args.paper, "--paper", COMPARED, PAPER_COLUMNS)
    runs = load_runs_for_cli(args.runs)
    table = compare(method_table(runs), paper)
    caption = (f"Ours vs the paper (VLA-Pruner, Table 1): success rates in %, ours with 95% Wilson intervals; "
               f"_diff = ours - paper; {RELATIVE_ACC_NOTE}; prefill_tmacs_pruned = analytic LLM prefill, TMACs, "
               f"mean over the pruned queries (the paper's convention for its FLOPs (T), its flops_t beside); "
               f"prefill_tmacs = the same over every query of an episode, dense warm-up included; latency: ours median ms per query, the paper's on an RTX 4090; {ROWS_NOTE}")
    paths = write_table(table, args.out, "table1_vs_paper", caption)
    ours_pi0 = pi0_table(runs)
    if len(ours_pi0):
        paper_pi0 = with_paper_speedup(read_paper(args.paper_pi0, "--paper-pi0", COMPARED_PI0, PAPER_COLUMNS_PI0))
        suites = [c for c in ours_pi0.columns if c.split("_ci_")[0] in SUITE_COLUMNS.values()]
        table4 = compare(ours_pi0, paper_pi0, COMPARED_PI0, suites, AFTER_PI0)
        caption = (f"Ours vs the paper (VLA-Pruner, Table 4, pi0): success rates in %, ours with 95% Wilson "
                   f"intervals; _diff = ours - paper; {PI0_NOTE}; {RELATIVE_ACC_NOTE}; latency: ours median ms per "
                   f"query, the paper's on an RTX 4090; speedup = dense latency / latency; {ROWS_NOTE}")
        paths += write_table(table4, args.out, "table4_vs_paper", caption)
    for markdown in paths[1::3]:
        print(markdown.read_text())
    print("\n".join(map(str, paths)))


def with_paper_speedup(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's speedup where it gives a latency: its dense row's latency / the row's (same model)."""
    dense = paper[paper.method == "Dense"].set_index("model").latency_ms_rtx4090
    return paper.assign(speedup_paper=paper.model.map(dense) / paper.latency_ms_rtx4090)


if __name__ == "__main__":
    main()
