"""Tables over any set of run directories: success per task and suite (95% Wilson intervals), relative
accuracy vs the dense run, kept tokens, FLOPs, latency and speedup; CSV, Markdown and LaTeX.

A run directory is one that holds `config.yaml` and `episodes/` (see evaluate/store.py). Runs of the same
experiment (model, suite, pruner, keep) with different seeds, or task shards of one run, are pooled:
success rates over all their episodes, latency over all their queries.

Definitions used in every table:
- success rate (%) with a 95% Wilson interval; skipped episodes are not attempted and do not count;
- relative accuracy (%) = 100 x mean over suites of SR_method / SR_dense, over the suites where the dense
  run (pruner none) of the same model exists and succeeded at least once;
- FLOPs = the paper's analytic LLM-prefill count in TMACs (= the paper's "FLOPs (T)"), mean over queries;
  `full_tmacs` = end to end (vision, projector, prefill, decode), see evaluate/flops.py;
- latency = median (and p90) ms per policy query, warm-up queries excluded;
- speedup = dense latency / method latency, same model and device.

`python -m evaluate.report RUN_OR_ROOT... --out DIR` writes the tables and the plots (evaluate/plots.py).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from evaluate.metrics import add_flops, cost_stats, has_prefill_tokens, latency_stats, query_frame
from evaluate.stats import wilson_interval
from evaluate.store import EPISODES_DIR, ResultStore

EXPERIMENT_KEYS = ["model", "device", "suite", "pruner", "keep"]
METHOD_KEYS = ["model", "device", "pruner", "keep"]
DENSE_PRUNER = "none"
# The paper's column and row names.
SUITE_COLUMNS = {"libero_spatial": "spatial", "libero_object": "object", "libero_goal": "goal",
                 "libero_10": "long", "libero_long": "long", "libero_90": "libero_90"}
METHOD_NAMES = {"none": "Dense", "fastv": "FastV", "sparsevlm": "SparseVLM", "vla": "VLA-Pruner",
                "random": "Random"}
RELATIVE_ACC_NOTE = "relative accuracy = 100 x mean over suites of SR_method / SR_dense (same model)"
UNITS_NOTE = ("success rates in % with 95% Wilson intervals; FLOPs = analytic LLM prefill in TMACs "
              "(the paper's 'FLOPs (T)'), mean over queries; latency = median ms per query without warm-up; "
              "speedup = dense latency / method latency (same model and device)")


@dataclass
class RunSet:
    runs: pd.DataFrame  # one row per run directory
    episodes: pd.DataFrame  # one row per episode, with its run's keys
    queries: pd.DataFrame  # one row per policy query, with its run's keys and FLOPs


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / EPISODES_DIR).is_dir()


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """The run directories at or below each path, each once."""
    found = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"no such run directory or root: {path}")
        candidates = [path, *(p.parent for p in path.rglob("config.yaml"))]
        found.update(p.resolve() for p in candidates if is_run_dir(p))
    return sorted(found)


def run_keys(run_dir: Path) -> dict:
    """What identifies a run's experiment, from its config.yaml (and the device it really ran on, if the
    policy recorded it in summary.json)."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    device = (summary.get("policy") or {}).get("device", cfg.get("device"))
    return {"run_dir": str(run_dir), "model": cfg["policy"]["label"], "device": str(device),
            "suite": cfg["suite"]["name"], "pruner": cfg["pruner"]["name"], "keep": float(cfg["keep"]),
            "seed": int(cfg["seed"]), "complete": summary.get("complete"), "model_cfg": cfg.get("model")}


def load_runs(paths: list[str | Path]) -> RunSet:
    from evaluate.flops import model_dims

    run_rows, episode_frames, query_frames = [], [], []
    for run_dir in find_run_dirs(paths):
        keys = run_keys(run_dir)
        model_cfg = keys.pop("model_cfg")
        records = ResultStore(run_dir).records()
        run_rows.append({**keys, "episodes": len(records)})
        episodes = pd.DataFrame([{"task_id": r.task_id, "task": r.task, "init_index": r.init_index,
                                  "success": r.success, "steps": r.steps, "status": r.status} for r in records],
                                columns=["task_id", "task", "init_index", "success", "steps", "status"])
        episode_frames.append(episodes.assign(**keys))
        queries = query_frame(records)
        dims = model_dims(model_cfg) if model_cfg and has_prefill_tokens(queries) else None
        query_frames.append(add_flops(queries, dims).drop(columns=["suite"]).assign(**keys))
    if not run_rows:
        raise FileNotFoundError(f"no run directories (config.yaml + {EPISODES_DIR}/) under {', '.join(map(str, paths))}")
    return RunSet(pd.DataFrame(run_rows), pd.concat(episode_frames, ignore_index=True),
                  pd.concat(query_frames, ignore_index=True))


# ---------------------------------------------------------------------------------------------- tables


def success_stats(episodes: pd.DataFrame) -> dict:
    attempted = episodes[episodes.status != "skipped"]
    n, k = len(attempted), int(attempted.success.sum())
    lo, hi = wilson_interval(k, n)
    return {"episodes": n, "successes": k, "sr": 100 * k / n if n else float("nan"),
            "sr_ci_low": 100 * lo, "sr_ci_high": 100 * hi}


def _grouped(rs: RunSet, keys: list[str]) -> pd.DataFrame:
    """Success (pooled episodes) and cost (pooled queries) per group of `keys`."""
    query_groups = dict(iter(rs.queries.groupby(keys, sort=False)))
    rows = []
    for group, episodes in rs.episodes.groupby(keys, sort=True):
        queries = query_groups.get(group, rs.queries.iloc[:0])
        rows.append({**dict(zip(keys, group)), "seeds": episodes.seed.nunique(), **success_stats(episodes),
                     **cost_stats(queries), **latency_stats(queries)})
    return pd.DataFrame(rows)


def task_table(rs: RunSet) -> pd.DataFrame:
    """Success per task (%, Wilson interval)."""
    rows = []
    for group, episodes in rs.episodes.groupby([*EXPERIMENT_KEYS, "task_id", "task"], sort=True):
        rows.append({**dict(zip([*EXPERIMENT_KEYS, "task_id", "task"], group)), **success_stats(episodes)})
    return pd.DataFrame(rows)


def _with_dense(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Add the dense run's success rate and latency (same `keys` minus pruner/keep) and the speedup."""
    match = [k for k in keys if k not in ("pruner", "keep")]
    dense = table[table.pruner == DENSE_PRUNER][[*match, "sr", "latency_total_median_ms"]]
    dense = dense.rename(columns={"sr": "dense_sr", "latency_total_median_ms": "dense_latency_ms"})
    out = table.merge(dense, on=match, how="left")
    out["speedup"] = out.dense_latency_ms / out.latency_total_median_ms
    return out


def suite_table(rs: RunSet) -> pd.DataFrame:
    """One row per experiment (model, device, suite, pruner, keep), seeds pooled, with SR_method/SR_dense."""
    table = _with_dense(_grouped(rs, EXPERIMENT_KEYS), EXPERIMENT_KEYS)
    table["relative_sr"] = table.sr / table.dense_sr.where(table.dense_sr > 0)
    return table


def retention_pct(pruner: str, keep: float) -> float:
    """The dense model keeps everything whatever `keep` says."""
    return 100.0 if pruner == DENSE_PRUNER else round(100 * keep, 2)


def method_table(rs: RunSet) -> pd.DataFrame:
    """The paper's Table 1 layout: rows model x retention x method; success per suite (%, Wilson interval),
    relative accuracy, FLOPs, kept tokens, latency and speedup (cost pooled over the row's suites)."""
    per_suite = suite_table(rs)
    overall = _with_dense(_grouped(rs, METHOD_KEYS), METHOD_KEYS)
    rows = []
    for _, row in overall.iterrows():
        mine = per_suite[(per_suite[METHOD_KEYS] == row[METHOD_KEYS]).all(axis=1)]
        out = {"model": row.model, "device": row.device, "retention_pct": retention_pct(row.pruner, row.keep),
               "method": METHOD_NAMES.get(row.pruner, row.pruner)}
        for _, s in mine.iterrows():
            col = SUITE_COLUMNS.get(s.suite, s.suite)
            out.update({col: s.sr, f"{col}_ci_low": s.sr_ci_low, f"{col}_ci_high": s.sr_ci_high})
        ratios = mine.relative_sr.dropna()
        out["relative_acc_pct"] = 100 * ratios.mean() if len(ratios) else float("nan")
        out.update({"prefill_tmacs": row.prefill_tmacs_mean, "full_tmacs": row.full_tmacs_mean,
                    "kept_visual": row.kept_visual_mean, "latency_ms": row.latency_total_median_ms,
                    "latency_p90_ms": row.latency_total_p90_ms, "speedup": row.speedup,
                    "episodes": row.episodes})
        rows.append(out)
    table = pd.DataFrame(rows)
    suites = [c for c in dict.fromkeys(SUITE_COLUMNS.values()) if c in table.columns]
    front = ["model", "device", "retention_pct", "method"]
    ordered = front + [c for s in suites for c in (s, f"{s}_ci_low", f"{s}_ci_high")]
    table = table[ordered + [c for c in table.columns if c not in ordered]]
    return table.sort_values(["model", "device", "retention_pct", "method"], ascending=[True, True, False, True],
                             key=lambda c: c.map(_method_order) if c.name == "method" else c, ignore_index=True)


def _method_order(name: str) -> int:
    order = list(METHOD_NAMES.values())
    return order.index(name) if name in order else len(order)


# --------------------------------------------------------------------------------------------- writing


def display_frame(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Human-readable copy: each `X` with `X_ci_low`/`X_ci_high` becomes "X [lo, hi]", floats rounded."""
    out = table.copy()
    for col in [c for c in table.columns if f"{c}_ci_low" in table.columns]:
        out[col] = [
            "" if pd.isna(v) else f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            for v, lo, hi in zip(table[col], table[f"{col}_ci_low"], table[f"{col}_ci_high"])
        ]
        out = out.drop(columns=[f"{col}_ci_low", f"{col}_ci_high"])
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].fillna("")
        elif pd.api.types.is_float_dtype(out[col]):
            # FLOPs with 4 significant digits: a tiny model's 0.0004 T must not print as 0.000
            spec = ".4g" if "tmacs" in col else ".3f" if col == "speedup" else f".{digits}f"
            out[col] = out[col].map(lambda v, f=spec: "" if pd.isna(v) else format(v, f))
    return out


def write_table(table: pd.DataFrame, out_dir: Path, name: str, caption: str) -> list[Path]:
    """`name`.csv (numbers), `name`.md and `name`.tex (formatted, with the caption)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = display_frame(table)
    paths = [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(f"{caption}\n\n{shown.to_markdown(index=False)}\n")
    paths[2].write_text(shown.to_latex(index=False, caption=caption, label=f"tab:{name}", escape=True))
    return paths


def write_report(rs: RunSet, out_dir: Path) -> list[Path]:
    """All tables (per task, per suite, Table 1 layout) and all plots into out_dir."""
    from evaluate.plots import write_plots

    per_suite = suite_table(rs)
    written = [
        *write_table(task_table(rs), out_dir, "tasks", f"Success per task. {UNITS_NOTE}."),
        *write_table(per_suite, out_dir, "suites", f"Per suite. {UNITS_NOTE}; relative_sr = SR_method / SR_dense."),
        *write_table(method_table(rs), out_dir, "table1", f"Table 1 layout. {UNITS_NOTE}; {RELATIVE_ACC_NOTE}."),
    ]
    return written + write_plots(per_suite, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluate.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or directories above them (e.g. runs/)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where tables and plots go")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    for path in write_report(runs, args.out):
        print(path)


if __name__ == "__main__":
    main()
