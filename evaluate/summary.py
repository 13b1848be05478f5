"""Run summary: per-task table (CSV + Markdown) and `summary.json`, from the episode records.

Written when a run starts and after every episode (so a killed run leaves counts that are right up to its
last finished episode), each file replaced whole. `complete` comes from the store's wanted set, never from
how the process ended.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from evaluate.analysis.stats import Success, attempted, success_of
from evaluate.store import EpisodeRecord, atomic_write


def per_task_table(records: list[EpisodeRecord]) -> pd.DataFrame:
    """One row per task; skipped episodes are counted but not in the success rate."""
    columns = ["suite", "task_id", "task", "episodes", "successes", "success_rate", "ci95_low", "ci95_high",
               "mean_steps", "env_errors", "skipped"]
    if not records:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame([asdict(r) for r in records])
    rows = []
    for (suite, task_id, task), g in df.groupby(["suite", "task_id", "task"], sort=True):
        success = success_of(g)
        lo, hi = success.ci95()
        rows.append({
            "suite": suite, "task_id": int(task_id), "task": task, "episodes": success.episodes,
            "successes": success.successes, "success_rate": success.rate(), "ci95_low": lo, "ci95_high": hi,
            "mean_steps": float(attempted(g).steps.mean()) if success.episodes else float("nan"),
            "env_errors": int((g.status == "env_error").sum()), "skipped": int((g.status == "skipped").sum()),
        })
    return pd.DataFrame(rows, columns=columns)


def write_summary(run_dir: Path, records: list[EpisodeRecord], meta: dict, progress: dict) -> dict:
    """`progress` = ResultStore.progress(): episodes wanted and done, and whether that is all."""
    table = per_task_table(records)
    atomic_write(run_dir / "per_task.csv", table.to_csv(index=False))
    atomic_write(run_dir / "per_task.md", table.to_markdown(index=False, floatfmt=".3f") + "\n")
    total = Success(episodes=int(table.episodes.sum()), successes=int(table.successes.sum()))
    summary = {
        **meta,
        **progress,
        "episodes": total.episodes,
        "successes": total.successes,
        "success_rate": total.rate() if total.episodes else None,
        "ci95": list(total.ci95()),
        "env_errors": int(table.env_errors.sum()),
        "skipped": int(table.skipped.sum()),
        "wall_time_s": round(sum(r.wall_time_s for r in records), 1),
    }
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=1))
    return summary
