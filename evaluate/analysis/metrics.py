"""Per-query cost metrics (latency, kept tokens, FLOPs) from episode records.

The VLA policy writes into each `EpisodeRecord.queries[i]`: `latency_ms` {vision, prefill, decode, total}
(ms), `batch_size` (queries answered together, num_envs > 1), `warmup` (bool), `visual_tokens` (before
pruning), `kept_visual`, `prefill_tokens` (tokens each LLM layer processed in the prefill; with KV reuse, VLA-Cache, also
`prefill_keys` per layer and `reused_visual`), `decode_steps`,
`selection_ms`. Policies without a model (noop, scripted) write none of them: their queries count, their cost
columns stay empty.

Headline FLOPs and kept tokens are what an episode costs: the mean over ALL its queries, the dense warm-up ones
included (`pruner.dense_warmup`; VLA-Pruner runs its first `window` queries dense while its action history fills,
and for OpenVLA-OFT's 15-20 queries per episode three dense queries add about 30% at keep 0.125). The mean over
the pruned queries only stands beside it as `*_mean_pruned`: the paper's convention (its VLA-Pruner FLOPs equal
FastV's at the same retention), used where the paper's rows are compared. Latency is a median per query of batch
size 1 over the pruned queries (the paper's convention; a median hides a few dense queries either way); a batched
run's per-query time is reported per batch size beside it (`latency_total_median_ms_by_batch_size`), labelled as
such, never as the headline.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from evaluate.analysis.flops import model_dims
from evaluate.store import EpisodeRecord
from vla_pruner.macs import TERA, ModelCost

LATENCY_STAGES = ("preprocess", "vision", "prefill", "decode", "total")  # preprocess: optional
QUERY_COLUMNS = ["suite", "task_id", "init_index", "query", "batch_size", "warmup", "visual_tokens", "kept_visual",
                 "decode_steps", "selection_ms", "prefill_tokens", "prefill_keys", "reused_visual",
                 *(f"{s}_ms" for s in LATENCY_STAGES)]


def query_frame(records: list[EpisodeRecord]) -> pd.DataFrame:
    """One row per policy query; missing keys become NaN (warmup False)."""
    rows = []
    for r in records:
        for i, q in enumerate(r.queries):
            latency = q.get("latency_ms") or {}
            rows.append({
                "suite": r.suite, "task_id": r.task_id, "init_index": r.init_index, "query": i,
                "batch_size": int(q.get("batch_size", 1)),
                "warmup": bool(q.get("warmup", False)),
                "visual_tokens": q.get("visual_tokens", math.nan), "kept_visual": q.get("kept_visual", math.nan),
                "decode_steps": q.get("decode_steps", math.nan), "selection_ms": q.get("selection_ms", math.nan),
                "prefill_tokens": q.get("prefill_tokens"),
                "prefill_keys": q.get("prefill_keys"),  # KV reuse (VLA-Cache): keys per layer, reused included
                "reused_visual": q.get("reused_visual", math.nan),
                **{f"{s}_ms": latency.get(s, math.nan) for s in LATENCY_STAGES},
            })
    return pd.DataFrame(rows, columns=QUERY_COLUMNS)


def has_prefill_tokens(queries: pd.DataFrame) -> bool:
    """Whether any query recorded per-layer token counts (only then are the model's dims needed)."""
    return bool(queries.prefill_tokens.map(lambda t: isinstance(t, list)).any())


def add_flops(queries: pd.DataFrame, cost: ModelCost | None) -> pd.DataFrame:
    """Columns `prefill_tmacs` (the paper's analytic count; pi0: its prefix) and `full_tmacs` (end to end) per query,
    counted by the model's cost (`vla_pruner.macs.ModelCost.recorded_macs`)."""
    out = queries.copy()
    prefill, full = [], []
    for tokens, keys, steps in zip(out.prefill_tokens, out.prefill_keys, out.decode_steps):
        macs = None
        if cost is not None and isinstance(tokens, list):
            macs = cost.recorded_macs(tokens, keys if isinstance(keys, list) else None,
                                      None if pd.isna(steps) else int(steps))
        prefill.append(math.nan if macs is None else macs.prefill / TERA)
        full.append(math.nan if macs is None else macs.total / TERA)
    out["prefill_tmacs"] = prefill
    out["full_tmacs"] = full
    return out


def _stat(values: pd.Series, fn) -> float | None:
    values = values.dropna()
    return float(fn(values)) if len(values) else None


def latency_stats(queries: pd.DataFrame) -> dict[str, Any]:
    """Median and p90 (ms) per stage over non-warm-up queries of batch size 1; warm-up queries' median
    separately; the median total per batch size (a batched query's time, shared by its samples)."""
    is_warm = queries.warmup.astype(bool)
    single = queries.batch_size == 1
    steady, warm = queries[~is_warm & single], queries[is_warm & single]
    out: dict[str, Any] = {"queries": len(queries), "warmup_queries": int(is_warm.sum()),
                           "batched_queries": int((~single).sum())}
    for stage in LATENCY_STAGES:
        col = f"{stage}_ms"
        out[f"latency_{stage}_median_ms"] = _stat(steady[col], np.median)
        out[f"latency_{stage}_p90_ms"] = _stat(steady[col], lambda v: np.percentile(v, 90))
    out["warmup_latency_total_median_ms"] = _stat(warm["total_ms"], np.median)
    out["selection_median_ms"] = _stat(steady["selection_ms"], np.median)
    out["latency_total_median_ms_by_batch_size"] = {
        str(size): _stat(group["total_ms"], np.median) for size, group in queries[~is_warm].groupby("batch_size")
        if group["total_ms"].notna().any()}
    return out


COST_COLUMNS = ("visual_tokens", "kept_visual", "reused_visual", "prefill_tmacs", "full_tmacs")  # reused: VLA-Cache


def cost_stats(queries: pd.DataFrame) -> dict[str, Any]:
    """Token and FLOP means (expects `add_flops` columns): `X_mean` over all queries (the headline: what an episode
    costs), `X_mean_pruned` over the queries that were not dense warm-up (the paper's convention)."""
    pruned = queries[~queries.warmup.astype(bool)]
    return {
        **{f"{c}_mean": _stat(queries[c], np.mean) for c in COST_COLUMNS},
        **{f"{c}_mean_pruned": _stat(pruned[c], np.mean) for c in COST_COLUMNS},
    }


def query_metrics(records: list[EpisodeRecord], model_cfg: Mapping | None = None) -> dict[str, Any]:
    """Cost metrics of one run, JSON-serialisable: for summary.json. FLOPs in TMACs (the paper's 'FLOPs (T)');
    the model's dims are only resolved (from `model_cfg`, no weights) if some query recorded prefill tokens."""
    queries = query_frame(records)
    dims = model_dims(model_cfg) if model_cfg is not None and has_prefill_tokens(queries) else None
    return {**latency_stats(queries), **cost_stats(add_flops(queries, dims)), "flops_unit": "TMACs"}
