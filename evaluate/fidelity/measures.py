"""How far a setting's query moved from the dense model's on the same observation, and a setting's summary.

Distances are in the model's normalised action space (OpenVLA and OpenVLA-OFT: q01/q99 to [-1, 1], gripper
0 close .. 1 open; pi0: mean/std), where every dimension weighs alike whatever its unit: the L1 distance is the
mean absolute difference per action dimension (the L1 norm / 7), so it reads like OFT's L1 training loss and
OpenVLA's bin width (2/255 = 0.0078). `action_l1` is over the executed actions of a query (what a rollout
executes: OpenVLA 1, OpenVLA-OFT its 8, pi0 `replan_steps`), `chunk_l1` over the whole output (pi0's 50).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from evaluate.analysis.metrics import query_metrics
from evaluate.policy import PolicyOutput
from evaluate.store import EpisodeRecord


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference per action dimension, over the actions both hold."""
    n = min(len(a), len(b))
    return float(np.abs(np.asarray(a[:n], dtype=np.float64) - np.asarray(b[:n], dtype=np.float64)).mean())


def compare(dense: PolicyOutput, pruned: PolicyOutput, expert: np.ndarray | None) -> dict:
    """One query's measures; `expert`: the demo's actions over the executed steps, normalised as the model's."""
    n = len(dense.actions)
    row = {
        "executed": n,
        "action_l1": l1(pruned.normalized[:n], dense.normalized[:n]),
        "chunk_l1": l1(pruned.normalized, dense.normalized),
        # the gripper command the env gets: close (> 0) or open
        "gripper_agreeing": int(((pruned.actions[:, -1] > 0) == (dense.actions[:, -1] > 0)).sum()),
        "warmup": bool(pruned.info.get("warmup", False)),
        "expert_l1": np.nan if expert is None or not len(expert) else l1(pruned.normalized[:n], expert),
    }
    if "action_tokens" in dense.info:  # OpenVLA: the decoded bins themselves
        ours, theirs = np.asarray(pruned.info["action_tokens"]), np.asarray(dense.info["action_tokens"])
        row["token_agreement"] = float((ours == theirs).mean())
        row["bin_distance"] = float(np.abs(ours - theirs).mean())
    return row


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else np.nan


def summarize(queries: pd.DataFrame, records: list[EpisodeRecord], model_cfg: Mapping) -> dict:
    """A setting's row: its queries' distances (all queries, as a rollout runs them; `action_l1_pruned` leaves out
    the dense warm-up queries), kept tokens and prefill FLOPs (evaluate.analysis.metrics, the run tables' count:
    means over all queries, and over the pruned ones)."""
    cost = query_metrics(records, model_cfg)
    pruned = queries[~queries.warmup]
    row = {
        "queries": len(queries),
        "episodes": queries.episode.nunique(),
        "action_l1": _mean(queries.action_l1),
        "action_l1_p90": float(np.percentile(queries.action_l1, 90)) if len(queries) else np.nan,
        "action_l1_pruned": _mean(pruned.action_l1),
        "chunk_l1": _mean(queries.chunk_l1),
        "chunk_l1_p90": float(np.percentile(queries.chunk_l1, 90)) if len(queries) else np.nan,
        "gripper_agreement": queries.gripper_agreeing.sum() / max(queries.executed.sum(), 1),
        "expert_l1": _mean(queries.expert_l1),
        "warmup_queries": int(queries.warmup.sum()),
        "kept_visual": cost["kept_visual_mean"],
        "kept_visual_pruned": cost["kept_visual_mean_pruned"],
        "prefill_tmacs": cost["prefill_tmacs_mean"],
        "prefill_tmacs_pruned": cost["prefill_tmacs_mean_pruned"],
    }
    for column in ("token_agreement", "bin_distance"):
        if column in queries:
            row[column] = _mean(queries[column])
    return row
