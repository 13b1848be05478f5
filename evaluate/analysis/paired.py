"""Paired tests against FastV: every pruned row of a table gets the exact McNemar p-value of its episodes against
FastV's at the same retention, the same dense warm-up and the same cut, on the same init states.

Two methods run on the same init states (same suite, seed, task and init state: the same scene and start) are
paired episode by episode, which is far more sensitive than comparing two success rates: the McNemar test counts
only the episodes one method solved and the other did not. The reference of a row is a FastV row of the same
experiment but for the pruner: same model, checkpoint, suite(s), step limit, device and keep, FastV's own defaults
for the model (its attention source), and the row's `dense_warmup` and `prune_layer` (0 and the model's cut for a
pruner without them). Columns added:
- `vs_fastv_pairs`: episodes both ran; `vs_fastv_only` / `fastv_only`: solved by the row only / by FastV only;
- `p_vs_fastv`: two-sided exact McNemar (analysis/stats.py); NaN where there is nothing to pair;
- `vs_fastv`: why a row has no p-value ("no FastV row at this keep, warm-up and cut", "no shared init states"),
  or "reference" for the FastV row itself.
"""
from __future__ import annotations

import json
from typing import Mapping

import pandas as pd

from evaluate.analysis.stats import attempted, mcnemar_exact
from evaluate.config import pruner_presets

REFERENCE = "fastv"
PAIR_KEYS = ["suite", "seed", "task_id", "init_index"]
MATCHED = ("dense_warmup", "prune_layer")  # pruner options the reference must share with the row
NOTE = ("p_vs_fastv = two-sided exact McNemar p of the row's episodes against FastV's at the same keep, dense "
        "warm-up and cut, paired over the episodes both ran (same suite, seed, task, init state: vs_fastv_pairs); "
        "vs_fastv_only / fastv_only = solved by one of them only")


def _fastv_defaults(flat: Mapping) -> dict:
    preset = pruner_presets(REFERENCE, flat.get("model.family"), flat.get("model.name")).get(REFERENCE, {})
    return {k: v for k, v in preset.items() if k != "name"}


def reference_key(flat: Mapping) -> str:
    """What a row must share with its FastV reference: the identity but the pruner, the keep, and the matched
    pruner options (the row's own, else FastV's defaults for a pruner without them, e.g. dense_warmup 0)."""
    defaults = _fastv_defaults(flat)
    shared = {k: v for k, v in flat.items() if not k.startswith("pruner.")}
    matched = {k: flat.get(f"pruner.{k}", 0 if k == "dense_warmup" else defaults.get(k)) for k in MATCHED}
    return json.dumps({**shared, **matched}, sort_keys=True, default=str)


def is_reference(flat: Mapping) -> bool:
    """A FastV row whose unmatched options are FastV's defaults for the model."""
    if flat.get("pruner.name") != REFERENCE:
        return False
    return all(flat.get(f"pruner.{k}", v) == v for k, v in _fastv_defaults(flat).items() if k not in MATCHED)


def _pairs(mine: pd.DataFrame, theirs: pd.DataFrame) -> dict:
    both = mine.merge(theirs, on=PAIR_KEYS, suffixes=("", "_fastv"))
    only_mine = int((both.success.astype(bool) & ~both.success_fastv.astype(bool)).sum())
    only_fastv = int((~both.success.astype(bool) & both.success_fastv.astype(bool)).sum())
    return {"vs_fastv_pairs": len(both), "vs_fastv_only": only_mine, "fastv_only": only_fastv,
            "p_vs_fastv": mcnemar_exact(only_mine, only_fastv) if len(both) else float("nan"),
            "vs_fastv": "" if len(both) else "no shared init states"}


def paired_vs_fastv(table: pd.DataFrame, flats: Mapping[str, Mapping], episodes: pd.DataFrame) -> pd.DataFrame:
    """`table` (rows with `identity`, `run_status`, `pruner`) with the columns above. `flats[identity]` is a row's
    flattened identity; `episodes` holds every row's episodes with its `identity` and `run_status` and PAIR_KEYS."""
    tried = attempted(episodes)
    by_row = {key: rows[[*PAIR_KEYS, "success"]] for key, rows in tried.groupby(["identity", "run_status"])}
    empty = pd.DataFrame(columns=[*PAIR_KEYS, "success"])
    keys = [reference_key(flats[i]) for i in table.identity]
    references: dict[str, tuple[str, str]] = {}
    for key, row in sorted(zip(keys, table.itertuples()), key=lambda kr: kr[1].run_status != "complete"):
        if is_reference(flats[row.identity]):
            references.setdefault(key, (row.identity, row.run_status))
    rows = []
    for key, row in zip(keys, table.itertuples()):
        if row.pruner == "none":
            rows.append({"vs_fastv": ""})
        elif references.get(key) == (row.identity, row.run_status):
            rows.append({"vs_fastv": "reference"})
        elif key not in references:
            rows.append({"vs_fastv": "no FastV row at this keep, warm-up and cut"})
        else:
            rows.append(_pairs(by_row.get((row.identity, row.run_status), empty), by_row.get(references[key], empty)))
    columns = ["vs_fastv_pairs", "vs_fastv_only", "fastv_only", "p_vs_fastv", "vs_fastv"]
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(rows, columns=columns)], axis=1)
