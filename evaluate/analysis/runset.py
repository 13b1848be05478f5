"""Run directories read for the reports: each one's identity, completeness and episode records.

Identity. A run's experiment is its `run_identity.json` (the resolved config minus the fields that do not
change an episode's outcome, evaluate.config.NON_IDENTITY_FIELDS: what `python -m evaluate` refuses to mix in
one directory); for directories older than that file, `config.yaml` minus the same fields. Every field counts:
each pruner option, `suite.max_steps`, the model and its checkpoint, `keep`, the device. `device` is the one
the policy really used (summary.json["policy"]["device"]) when summary.json says so, else the configured one.

Seeds. Runs whose identities differ only in `seed` are one experiment run with several seeds: the tables pool
their episodes (success over all of them, one Wilson interval over the pooled count) and their queries, and
say so in `seeds` (how many) and `seed_values` (which). Directories with the same identity *and* seed (task
shards written to different places, a copied directory) are one run: an episode held by both counts once.

Completeness. Done and wanted episodes come from the store (ResultStore.progress: the episodes any process was
asked to run, `wanted/`); for directories older than `wanted/`, `complete` comes from summary.json if readable,
and the number wanted is unknown. A run is `complete`, `incomplete` or `unknown`, and runs of one experiment
are pooled only with runs of the same state: an incomplete run is a row of its own, marked, never averaged
into a finished one (a researcher watching a sweep sees it, and sees that it is not final).

Unreadable files. The episode records are the source of truth; a truncated summary.json costs only the device
actually used and the fallback completeness, and is named in a warning. A run whose identity cannot be read at
all (run_identity.json and config.yaml both unreadable or incomplete) is skipped with a warning naming it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluate.analysis.labels import method_label
from evaluate.analysis.metrics import add_flops, has_prefill_tokens, query_frame
from evaluate.config import portable
from evaluate.store import (CONFIG_FILE, EPISODES_DIR, IDENTITY_FILE, ConfigUnreadable, ResultStore, config_identity,
                            one_line)

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
COMPLETE, INCOMPLETE, UNKNOWN = "complete", "incomplete", "unknown"
# What the tables group by: the identity without its seed, and the run's completion state.
GROUP_KEYS = ["experiment", "run_status"]
EPISODE_COLUMNS = ["task_id", "task", "init_index", "success", "steps", "status"]


@dataclass
class RunSet:
    runs: pd.DataFrame  # one row per run directory
    episodes: pd.DataFrame  # one row per episode, with its run's keys
    queries: pd.DataFrame  # one row per policy query, with its run's keys and FLOPs
    identities: dict[str, dict]  # experiment key -> the identity without seed (device as used)
    columns: dict[str, dict]  # experiment key -> its identity_columns (computed once: labels read config files)


def is_run_dir(path: Path) -> bool:
    has_identity = (path / CONFIG_FILE).is_file() or (path / IDENTITY_FILE).is_file()
    return has_identity and (path / EPISODES_DIR).is_dir()


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """The run directories at or below each path, each once."""
    found = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"no such run directory or root: {path}")
        marked = [*path.rglob(CONFIG_FILE), *path.rglob(IDENTITY_FILE)]
        found.update(p.resolve() for p in [path, *(m.parent for m in marked)] if is_run_dir(p))
    return sorted(found)


def experiment_key(identity: dict) -> str:
    """One string per experiment: the identity without `seed`, canonical JSON."""
    return json.dumps({k: v for k, v in identity.items() if k != "seed"}, sort_keys=True)


def flatten(identity: dict, prefix: str = "") -> dict:
    """`{"suite": {"max_steps": 40}}` -> `{"suite.max_steps": 40}`, to compare identities field by field."""
    out = {}
    for key, value in identity.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity_columns(identity: dict) -> dict:
    """The identity fields every table shows in columns of their own."""
    return {"model": identity["policy"]["label"], "device": str(identity["device"]),
            "suite": identity["suite"]["name"], "max_steps": identity["suite"].get("max_steps"),
            "method": method_label(identity), "pruner": identity["pruner"]["name"], "keep": float(identity["keep"])}


def _read_json(path: Path, consequence: str) -> dict | None:
    """The JSON object in `path`; None if there is no such file, or (with a warning) if it is unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s); %s", path, one_line(e), consequence)
        return None
    if not isinstance(data, dict):
        log.warning("%s does not hold a JSON object; %s", path, consequence)
        return None
    return data


def read_identity(run_dir: Path) -> dict | None:
    """run_identity.json, else config.yaml minus the fields that do not change outcomes; None if neither reads."""
    identity = _read_json(run_dir / IDENTITY_FILE, f"reading the identity from {CONFIG_FILE} instead")
    if identity is not None:
        return portable(identity)
    try:
        return config_identity(run_dir / CONFIG_FILE)
    except ConfigUnreadable as e:
        log.warning("%s; run skipped: its experiment is unknown", e)
        return None


def completeness(store: ResultStore, records: list, summary: dict | None) -> dict:
    """State, episodes done and wanted (None = unknown: a directory older than `wanted/`)."""
    progress = store.progress(records)
    if progress["complete"] is not None:
        return {"run_status": COMPLETE if progress["complete"] else INCOMPLETE,
                "episodes_done": progress["episodes_done"], "episodes_wanted": progress["episodes_wanted"]}
    complete = (summary or {}).get("complete")
    status = UNKNOWN if complete is None else COMPLETE if complete else INCOMPLETE
    return {"run_status": status, "episodes_done": len(records), "episodes_wanted": None}


def load_runs(paths: list[str | Path]) -> RunSet:
    from evaluate.analysis.flops import model_dims

    run_rows, episode_frames, query_frames, identities, columns = [], [], [], {}, {}
    seen: dict[tuple[str, object], tuple[Path, set]] = {}  # (experiment, seed) -> first directory, its episodes
    for run_dir in find_run_dirs(paths):
        identity = read_identity(run_dir)
        if identity is None:
            continue
        summary = _read_json(run_dir / SUMMARY_FILE, "using the configured device; the episode records still count")
        device = ((summary or {}).get("policy") or {}).get("device")
        identity = {**identity, "device": str(device or identity.get("device"))}
        try:
            shown = identity_columns(identity)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            log.warning("%s: the run's identity lacks %s; run skipped", run_dir, e)
            continue
        experiment = experiment_key(identity)
        identities[experiment] = {k: v for k, v in identity.items() if k != "seed"}
        columns[experiment] = shown
        store = ResultStore(run_dir)
        records = store.records()
        wanted = store.wanted_keys()
        keys = {"run_dir": str(run_dir), "experiment": experiment, "seed": identity.get("seed"),
                **completeness(store, records, summary)}
        run_rows.append({**keys, "wanted_by_task": _count_by_task(wanted) if wanted else None,
                         "records": len(records)})
        records = _drop_seen(records, seen, (experiment, keys["seed"]), run_dir)
        episodes = pd.DataFrame([{"task_id": r.task_id, "task": r.task, "init_index": r.init_index,
                                  "success": r.success, "steps": r.steps, "status": r.status} for r in records],
                                columns=EPISODE_COLUMNS)
        episodes["wanted"] = [float(r.key in wanted) for r in records] if wanted else float("nan")
        episodes["suite"] = shown["suite"]
        episode_frames.append(episodes.assign(**keys))
        queries = query_frame(records)
        model_cfg = identity.get("model")
        dims = model_dims(model_cfg) if model_cfg and has_prefill_tokens(queries) else None
        query_frames.append(add_flops(queries, dims).drop(columns=["suite"]).assign(**keys))
    if not run_rows:
        raise FileNotFoundError(f"no readable run directories ({CONFIG_FILE} + {EPISODES_DIR}/) under "
                                f"{', '.join(map(str, paths))}")
    return RunSet(pd.DataFrame(run_rows), pd.concat(episode_frames, ignore_index=True),
                  pd.concat(query_frames, ignore_index=True), identities, columns)


def _count_by_task(keys: set[tuple[int, int]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for task_id, _ in keys:
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def _drop_seen(records: list, seen: dict, run: tuple, run_dir: Path) -> list:
    """Records of an (experiment, seed) another directory already holds count once (the first directory wins)."""
    first_dir, keys = seen.setdefault(run, (run_dir, set()))
    kept = [r for r in records if r.key not in keys]
    if first_dir != run_dir and len(kept) < len(records):
        log.warning("%s and %s hold the same experiment and seed; %d episodes found in both are counted once",
                    first_dir, run_dir, len(records) - len(kept))
    keys.update(r.key for r in kept)
    return kept
