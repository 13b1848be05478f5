"""The replay's results: `fidelity.csv` / `.md` / `.tex` (one row per setting), `fidelity_queries.csv` (one row per
setting and query) and `fidelity.png` / `.pdf` (action L1 against retention and against prefill FLOPs, one line per
pruner; the dense model's own distance to the expert, where the demos hold one, as a dashed line)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from evaluate.analysis.labels import METHOD_NAMES, PRESET_NAMES, method_order
from evaluate.analysis.plots import legend_below, save_figure
from evaluate.analysis.report import write_table
from evaluate.fidelity.measures import summarize
from evaluate.fidelity.replay import REFERENCE, Replayed

FRONT = ["pruner", "keep", "told", "method", "queries", "action_l1", "action_l1_p90", "action_l1_pruned", "chunk_l1",
         "chunk_l1_p90", "gripper_agreement", "token_agreement", "bin_distance", "expert_l1", "dense_expert_l1",
         "kept_visual", "kept_visual_pruned", "prefill_tmacs", "prefill_tmacs_pruned",
         "dense_prefill_tmacs"]
NOTE = ("action_l1 = mean absolute difference per action dimension between the setting's and the dense model's "
        "executed actions, in the model's normalised action space (mean and p90 over all queries; _pruned: "
        "without the dense warm-up queries, whose L1 is 0); chunk_l1 = the same over the whole output chunk; gripper_agreement = "
        "share of executed actions whose gripper command (open/close) equals the dense one; token_agreement, "
        "bin_distance (OpenVLA) = share of equal action tokens, mean bin difference; expert_l1 = distance to the "
        "demo's actions, dense_expert_l1 = the dense model's (the scale); kept_visual and prefill_tmacs (the "
        "analytic LLM prefill, TMACs) over all queries, _pruned over the pruned ones; told = the instruction the "
        "dense model was given instead of each demo's own (instruction=, instruction_from_task=)")


def method_name(pruner: str) -> str:
    return PRESET_NAMES.get(pruner) or METHOD_NAMES.get(pruner, pruner)


def fidelity_table(replayed: Replayed, model_cfg: Mapping, suite: str) -> pd.DataFrame:
    """One row per setting, the dense reference's expert distance and FLOPs beside each (and the model and suite,
    which evaluate.fidelity.success matches closed-loop runs by)."""
    queries = replayed.frame()
    told = queries.told.fillna("")
    of = lambda s: queries[(queries.pruner == s.pruner) & (queries.keep == s.keep) & (told == (s.told or ""))]  # noqa: E731
    reference = summarize(of(REFERENCE), replayed.records[REFERENCE], model_cfg)
    rows = [{"pruner": s.pruner, "keep": s.keep, "told": s.told or "",
             "method": method_name(s.pruner) + (f", told '{s.told}'" if s.told else ""),
             **summarize(of(s), records, model_cfg),
             "dense_expert_l1": reference["expert_l1"], "dense_prefill_tmacs": reference["prefill_tmacs"],
             "model": model_cfg["name"], "suite": suite}
            for s, records in replayed.records.items() if s != REFERENCE]
    table = pd.DataFrame(rows)
    table = table[[c for c in FRONT if c in table] + [c for c in table if c not in FRONT]]
    order = table.pruner.map(method_order)
    return table.assign(_o=order).sort_values(["_o", "pruner", "keep"], ascending=[True, True, False],
                                              ignore_index=True).drop(columns="_o")


def plot(table: pd.DataFrame, out_dir: Path, title: str) -> list[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for i, (pruner, rows) in enumerate(table.groupby("pruner", sort=False)):
        rows = rows.sort_values("keep")
        style = {"color": f"C{i % 10}", "marker": "o", "label": method_name(pruner)}
        axes[0].plot(100 * rows.keep, rows.action_l1, **style)
        axes[1].plot(rows.prefill_tmacs, rows.action_l1, **style)
    scale = table.dense_expert_l1.dropna()
    for ax in axes:
        if len(scale):
            ax.axhline(scale.iloc[0], color="grey", linestyle="--", linewidth=1, label="dense vs expert")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xticks(sorted(100 * table.keep.unique()))
    axes[0].xaxis.set_major_formatter(ScalarFormatter())
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_xlabel("visual tokens kept (%)")
    axes[1].set_xlabel("LLM prefill FLOPs (T, MACs), mean over all queries")
    axes[0].set_ylabel("action L1 to dense (normalised)")
    fig.suptitle(title, fontsize="medium")
    legend_below(fig, axes)
    return save_figure(fig, out_dir, "fidelity")


def write_outputs(replayed: Replayed, model_cfg: Mapping, suite: str, out_dir: Path, caption: str,
                  title: str) -> tuple[pd.DataFrame, list[Path]]:
    """The tables (`caption` above the Markdown one) and the plot (`title`, one line); returns the table too."""
    table = fidelity_table(replayed, model_cfg, suite)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_query = out_dir / "fidelity_queries.csv"
    replayed.frame().to_csv(per_query, index=False)
    paths = write_table(table, out_dir, "fidelity", f"{caption}. {NOTE}.", digits=4)
    return table, [*paths, per_query, *plot(table, out_dir, title)]
