"""Our runs in the paper's Table 1 layout, with the paper's numbers beside them and the difference.

    python scripts/collect.py runs/ [more run dirs or roots] --out results/table1 [--paper PATH]

Rows: model x retention x method (the paper's rows of every model we have runs of, plus ours); columns per
suite: ours, paper, ours - paper (success rate, %), the same for relative accuracy, then our FLOPs
(TMACs = the paper's "FLOPs (T)"), our latency and the paper's (RTX 4090: compare only the trend), and how
each of our rows was made: seeds pooled, completeness (episodes done / wanted), settings. Our rows are
evaluate.analysis.report's Table 1 rows (one per experiment, never pooled across pruner options, step limits or
checkpoints; incomplete runs are rows of their own): a variant such as `VLA-Pruner (criterion=semantic_only)`
has no paper row and stands alone.
Writes table1_vs_paper.{csv,md,tex} and prints the Markdown.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluate.analysis.labels import paper_row  # noqa: E402
from evaluate.analysis.report import (RELATIVE_ACC_NOTE, ROWS_NOTE, load_runs_for_cli, method_table,  # noqa: E402
                                      write_table)

DEFAULT_PAPER = REPO / ".." / "shared" / "reference" / "paper_table1_libero.csv"
ROW_KEYS = ["model", "retention_pct", "method"]
COMPARED = ["spatial", "object", "goal", "long", "relative_acc_pct"]


def read_paper(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SystemExit(f"error: the paper's table is not at {path.resolve()}; pass --paper PATH "
                         f"(a CSV with columns {', '.join(ROW_KEYS + COMPARED)}, latency_ms_rtx4090)")
    return pd.read_csv(path)


def compare(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Outer join on (model, retention, method) for the models we ran; per compared column: ours, paper, diff.
    Both readings of VLA-Pruner (the paper's defaults, `pruner=vla`; the released code, `pruner=vla_released`)
    are compared with the paper's VLA-Pruner row, the `reading` column says which a row is."""
    paper = paper[paper.model.isin(ours.model.unique())]
    paper = paper.rename(columns={"method": "paper_method", **{c: f"{c}_paper" for c in COMPARED}})
    ours = ours.assign(paper_method=[paper_row(m)[0] for m in ours.method],
                       reading=[paper_row(m)[1] for m in ours.method])
    merged = ours.reindex(columns=[*ours.columns, *(c for c in COMPARED if c not in ours)])
    merged = merged.merge(paper, on=["model", "retention_pct", "paper_method"], how="outer")
    merged["method"] = merged.method.fillna(merged.paper_method)  # the paper's rows we did not run
    columns = [*ROW_KEYS, "reading", "device"]
    for col in COMPARED:
        merged[f"{col}_diff"] = merged[col] - merged[f"{col}_paper"]
        extra = [c for c in (f"{col}_ci_low", f"{col}_ci_high") if c in merged]
        columns += [col, *extra, f"{col}_paper", f"{col}_diff"]
    columns += ["prefill_tmacs", "latency_ms", "latency_ms_rtx4090", "episodes", "seeds", "completeness",
                "run_status", "settings"]
    merged = merged.reindex(columns=columns)
    order = list(dict.fromkeys([*paper.paper_method, *ours.method]))  # the paper's row order, our extra ones after
    return merged.sort_values(["model", "retention_pct", "method"], ascending=[True, False, True], ignore_index=True,
                              key=lambda c: c.map(order.index) if c.name == "method" else c)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or directories above them")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--paper", type=Path, default=DEFAULT_PAPER, help="the paper's Table 1 as CSV")
    args = parser.parse_args(argv)
    paper = read_paper(args.paper)
    table = compare(method_table(load_runs_for_cli(args.runs)), paper)
    caption = (f"Ours vs the paper (VLA-Pruner, Table 1): success rates in %, ours with 95% Wilson intervals; "
               f"_diff = ours - paper; {RELATIVE_ACC_NOTE}; prefill_tmacs = analytic LLM prefill, TMACs "
               f"(the paper's FLOPs (T)); latency: ours median ms per query, the paper's on an RTX 4090; {ROWS_NOTE}")
    paths = write_table(table, args.out, "table1_vs_paper", caption)
    print(paths[1].read_text())
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
    main()
