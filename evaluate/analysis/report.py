"""Tables over any set of run directories: success per task and suite (95% Wilson intervals), relative
accuracy vs the dense run, kept tokens, FLOPs, latency and speedup; CSV, Markdown and LaTeX.

Rows never mix experiments. A row is one experiment: the full run identity (every pruner option,
`suite.max_steps`, model and checkpoint, keep, device as used; see evaluate/analysis/runset.py for how it is read)
with the seed left out, and one completion state:
- seeds: runs that differ only in `seed` are pooled as seeds of one experiment (success over all their
  episodes, latency over all their queries); `seeds` and `seed_values` say how many and which;
- completeness: `completeness` = episodes done / wanted ("/?" for runs older than the store's `wanted/`) and
  `run_status` = complete | incomplete | unknown. An incomplete run is a row of its own marked incomplete,
  never pooled with finished runs of its experiment; the dense reference of relative accuracy and speedup is
  a complete (or unknown) dense run, never an incomplete one;
- names: `method` is the pruner's name, with the options that differ from configs/pruner/<name>.yaml in
  brackets (`VLA-Pruner (criterion=semantic_only)`, evaluate/analysis/labels.py); when rows still look alike,
  `settings` lists the identity fields that tell them apart (`suite.max_steps=40`), else it is empty;
- Table 1 rows span suites, so they leave out what belongs to one suite (suite name and step limit, model
  checkpoint and statistics key), unless two runs of one row and suite differ in it: then they are two rows.

Definitions used in every table:
- success rate (%) with a 95% Wilson interval; skipped episodes are not attempted and do not count;
- relative accuracy (%) = 100 x mean over the unperturbed suites of SR_method / SR_dense, over those where the dense
  run (pruner none, same identity otherwise) exists and succeeded at least once; with LIBERO-PRO runs,
  `relative_acc_perturbed_pct` is the same over the perturbed suites, whose columns follow the paper's, and the
  robustness view (analysis/robustness.py) shows each pruner's drop against dense per suite with a paired test;
- FLOPs = the paper's analytic LLM-prefill count in TMACs (= the paper's "FLOPs (T)"), mean over ALL queries of
  the episodes (what an episode costs, dense warm-up queries included); `prefill_tmacs_pruned` = mean over the
  pruned queries only (the paper's convention); `full_tmacs` = end to end (vision, projector, prefill, decode),
  see evaluate/analysis/flops.py;
- latency = median (and p90) ms per policy query, warm-up queries excluded;
- speedup = dense latency / method latency, same model and device;
- keep and retention are printed as configured (0.25, 25), never rounded;
- Table 1 rows name their checkpoints (`checkpoint`) and say whether they are the model the paper ran under that
  name (`paper_model`: its family's published architecture; scripts/collect.py pairs only those with the paper).

`python -m evaluate.report RUN_OR_ROOT... --out DIR` writes the tables and the plots (evaluate/analysis/plots.py);
files it cannot read are named in a `warning:` line on stderr.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from evaluate.analysis.flops import model_dims, model_family
from evaluate.analysis.labels import DENSE_PRUNER, METHOD_NAMES, PERTURBED_COLUMNS, SUITE_COLUMNS, method_order
from evaluate.analysis.metrics import cost_stats, latency_stats
from evaluate.analysis.paired import NOTE as PAIRED_NOTE, paired_vs_fastv
from evaluate.analysis.plots import write_plots
from evaluate.analysis.robustness import ROBUSTNESS_NOTE, drop_plots, robustness_table
from evaluate.arguments import CommandParser, output_directory
from evaluate.analysis.runset import COMPLETE, GROUP_KEYS, INCOMPLETE, RunSet, flatten, load_runs
from evaluate.analysis.stats import success_of
from evaluate.config import local
from evaluate.envs.suites import model_suite
from evaluate.errors import ConfigError
from vla_pruner.models.checkpoint import CheckpointError

# Identity fields that belong to one suite; a Table 1 row spans suites (see the module docstring).
PER_SUITE_FIELDS = ("suite.name", "suite.max_steps", "model.checkpoint", "model.unnorm_key")
EXACT_COLUMNS = ("keep", "retention_pct")  # printed as configured: 0.25 stays 0.25 (not 0.2)
RELATIVE_ACC_NOTE = "relative accuracy = 100 x mean over suites of SR_method / SR_dense (same model)"
UNITS_NOTE = ("success rates in % with 95% Wilson intervals; FLOPs = analytic LLM prefill in TMACs "
              "(the paper's 'FLOPs (T)'), mean over all queries, dense warm-up included (_pruned: over the pruned "
              "queries only, the paper's convention); latency = median ms per query without warm-up; "
              "speedup = dense latency / method latency (same model and device)")
ROWS_NOTE = (f"{PAIRED_NOTE}; one row per experiment (full run identity; method options that differ from the defaults in "
             "brackets); seeds = runs differing only in seed, pooled; completeness = episodes done / wanted, "
             "incomplete runs are rows of their own")


# ---------------------------------------------------------------------------------------------- groups


def success_stats(episodes: pd.DataFrame) -> dict:
    success = success_of(episodes)
    low, high = success.ci95(100)
    return {"episodes": success.episodes, "successes": success.successes, "sr": success.rate(100),
            "sr_ci_low": low, "sr_ci_high": high}


def seed_stats(seeds: pd.Series) -> dict:
    values = sorted(seeds.dropna().unique())
    return {"seeds": len(values), "seed_values": ", ".join(map(str, values))}


def completeness_label(done: int, wanted: int | None) -> str:
    return f"{done}/{'?' if wanted is None else wanted}"


def _run_completeness(runs: pd.DataFrame) -> str:
    wanted = None if runs.episodes_wanted.isna().any() else int(runs.episodes_wanted.sum())
    return completeness_label(int(runs.episodes_done.sum()), wanted)


def _with_row(frame: pd.DataFrame, row_of: dict) -> pd.DataFrame:
    return frame.assign(identity=[row_of[k] for k in zip(frame.experiment, frame.run_status)])


def _groups(rs: RunSet, row_of: dict[tuple[str, str], str]) -> pd.DataFrame:
    """One row per (row identity, run_status): success over the pooled episodes, cost over the pooled queries,
    seeds and completeness. `row_of` maps each (experiment, run_status) to the identity of its row."""
    keys = ["identity", "run_status"]
    episodes = dict(iter(_with_row(rs.episodes, row_of).groupby(keys, sort=False)))
    queries = dict(iter(_with_row(rs.queries, row_of).groupby(keys, sort=False)))
    rows = []
    for key, runs in _with_row(rs.runs, row_of).groupby(keys, sort=False):
        mine = episodes.get(key, rs.episodes.iloc[:0])
        cost = queries.get(key, rs.queries.iloc[:0])
        rows.append({**rs.columns[runs.experiment.iloc[0]], **dict(zip(keys, key)),
                     **seed_stats(runs.seed), "completeness": _run_completeness(runs), **success_stats(mine),
                     **cost_stats(cost), **latency_stats(cost)})
    return pd.DataFrame(rows)


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def varying_fields(flats: list[dict], ignore: tuple[str, ...] = ()) -> list[str]:
    """The fields (but `ignore`) whose values are not the same in all of `flats` (flattened identities)."""
    fields = dict.fromkeys(f for flat in flats for f in flat if f not in ignore)
    return sorted(f for f in fields if len({_shown(flat.get(f)) for flat in flats}) > 1)


def settings_labels(table: pd.DataFrame, flats: dict[str, dict], alike: list[str]) -> list[str]:
    """For rows of one method that look the same in the `alike` columns (keep aside, so that a method's points
    at several retentions keep one label) but are different experiments, the identity fields that tell them
    apart (`suite.max_steps=40`); '' for a method with one experiment per retention."""
    out = pd.Series("", index=table.index, dtype=object)
    for _, rows in table.groupby(alike, dropna=False, sort=False):
        mine = [flats[i] for i in rows.identity]
        varying = varying_fields(mine, ignore=("keep",))
        out[rows.index] = [", ".join(f"{f}={_shown(flat.get(f))}" for f in varying) for flat in mine]
    return list(out)


def _dense_key(flat: dict, ignore: tuple[str, ...]) -> str:
    """The identity a row's dense reference has: the same, but for the pruner, keep and `ignore`."""
    return json.dumps({k: v for k, v in flat.items() if not k.startswith("pruner.") and k != "keep"
                       and k not in ignore}, sort_keys=True)


def _with_dense(table: pd.DataFrame, flats: dict[str, dict], ignore: tuple[str, ...] = ()) -> pd.DataFrame:
    """Add the dense reference's success rate and latency, and the speedup. The reference is a complete dense
    run of the same identity but for the fields in `ignore` (else one of unknown completeness), never an
    incomplete one; `dense_identity` and `dense_status` name it (the robustness view pairs its episodes)."""
    table = table.assign(dense_key=[_dense_key(flats[i], ignore) for i in table.identity])
    dense = table[(table.pruner == DENSE_PRUNER) & (table.run_status != INCOMPLETE)]
    dense = dense.sort_values("run_status", key=lambda s: s != COMPLETE, kind="stable").drop_duplicates("dense_key")
    dense = dense[["dense_key", "sr", "latency_total_median_ms", "identity", "run_status"]].rename(
        columns={"sr": "dense_sr", "latency_total_median_ms": "dense_latency_ms", "identity": "dense_identity",
                 "run_status": "dense_status"})
    out = table.merge(dense, on="dense_key", how="left").drop(columns="dense_key")
    out["speedup"] = out.dense_latency_ms / out.latency_total_median_ms
    return out


# ---------------------------------------------------------------------------------------------- tables


def _sorted(table: pd.DataFrame, by: list[str], descending: tuple[str, ...] = ()) -> pd.DataFrame:
    """Sorted by `by` (a method by the paper's pruner order, then by name), then settings and completion."""
    keys = [k for c in by for k in (("_order", "method") if c == "method" else (c,))] + ["settings", "run_status"]
    table = table.assign(_order=table.pruner.map(method_order))
    table = table.sort_values(keys, ascending=[k not in descending for k in keys], ignore_index=True, kind="stable")
    return table.drop(columns="_order")


def task_table(rs: RunSet) -> pd.DataFrame:
    """Success per task (%, Wilson interval), with the task's completeness (done / wanted)."""
    runs = dict(iter(rs.runs.groupby(GROUP_KEYS, sort=False)))
    rows = []
    for (experiment, status, task_id, task), episodes in rs.episodes.groupby([*GROUP_KEYS, "task_id", "task"]):
        wanted_by_task = list(runs[(experiment, status)].wanted_by_task)
        wanted = None if any(w is None for w in wanted_by_task) else sum(w.get(task_id, 0) for w in wanted_by_task)
        done = int(episodes.wanted.fillna(1.0).sum())  # episodes of runs older than `wanted/` all count
        rows.append({**rs.columns[experiment], "identity": experiment, "run_status": status,
                     "task_id": task_id, "task": task, **seed_stats(episodes.seed),
                     "completeness": completeness_label(done, wanted), **success_stats(episodes)})
    if not rows:  # no episode recorded yet (a run just started, or every record unreadable)
        return pd.DataFrame(columns=["model", "device", "suite", "method", "keep", "task_id", "task", "completeness",
                                     "episodes", "sr"])
    table = pd.DataFrame(rows)
    flats = {e: flatten(rs.identities[e]) for e in table.identity}
    table["settings"] = settings_labels(table, flats, ["model", "device", "suite", "method", "task_id"])
    table = _sorted(table, ["model", "device", "suite", "method", "keep", "task_id"], descending=("keep",))
    return table.drop(columns="identity")


def suite_table(rs: RunSet) -> pd.DataFrame:
    """One row per experiment and suite (seeds pooled), with SR_method / SR_dense and the speedup."""
    table = _groups(rs, {k: k[0] for k in zip(rs.runs.experiment, rs.runs.run_status)})
    flats = {e: flatten(rs.identities[e]) for e in table.identity}
    table = _with_dense(table, flats)
    table["relative_sr"] = table.sr / table.dense_sr.where(table.dense_sr > 0)
    table["settings"] = settings_labels(table, flats, ["model", "device", "suite", "method"])
    table = paired_vs_fastv(table, flats, rs.episodes.assign(identity=rs.episodes.experiment))
    return _sorted(table, ["model", "device", "suite", "method", "keep"], descending=("keep",))


def retention_pct(pruner: str, keep: float) -> float:
    """The dense model keeps everything whatever `keep` says."""
    return 100.0 if pruner == DENSE_PRUNER else round(100 * keep, 10)


def table1_rows(per_suite: pd.DataFrame, rs: RunSet) -> dict[tuple[str, str], str]:
    """The Table 1 row of each (experiment, run_status) of the suite table: its identity without the per-suite
    fields, which are kept only where two runs of one row would otherwise share a suite column."""
    flats = {e: flatten(rs.identities[e]) for e in per_suite.identity}

    def row_identity(experiment: str, keep_fields=()) -> str:
        flat = flats[experiment]
        return json.dumps({k: v for k, v in flat.items() if k not in PER_SUITE_FIELDS or k in keep_fields},
                          sort_keys=True)

    table = per_suite.assign(base=[row_identity(e) for e in per_suite.identity],
                             column=per_suite.suite.map(lambda s: SUITE_COLUMNS.get(s, s)))
    extra: dict[tuple[str, str], set] = {}
    for (base, status, _), cell in table.groupby(["base", "run_status", "column"], sort=False):
        if len(cell) > 1:
            extra.setdefault((base, status), set()).update(varying_fields([flats[e] for e in cell.identity]))
    return {(e, s): row_identity(e, extra.get((b, s), ())) for e, s, b in zip(table.identity, table.run_status,
                                                                             table.base)}


def checkpoint_label(identity: dict) -> str:
    """The checkpoint behind a run (the last name of its directory or hub id; `seed N` for a model built from a
    seed; '' for a policy without a model, or a run that does not say): how a table names the weights of a row."""
    model = identity.get("model") or {}
    if (identity.get("policy") or {}).get("label") != model.get("name"):
        return ""
    if model.get("build_seed") is not None:
        return f"seed {model['build_seed']}"
    suite = identity["suite"]["name"]
    try:
        suite = model_suite(suite)
    except ConfigError:  # a suite this clone does not know: its own name
        pass
    path = model.get("checkpoint") or (model.get("checkpoints") or {}).get(suite)
    return Path(local(path)).name if path else ""


def paper_model(identity: dict) -> bool:
    """Whether a run's model is the model the paper ran under that name: a checkpoint of its family's published
    architecture (a checkpoint on this machine says by its config.json; one that is not counts as published, as for
    its FLOPs), not a model built from a seed, nor, say, a small checkpoint loaded as `model=openvla_oft`."""
    model = identity.get("model") or {}
    if (identity.get("policy") or {}).get("label") != model.get("name") or model.get("build_seed") is not None:
        return False
    try:
        published = model_family(model).model_cost({"name": model.get("name"), "family": model.get("family")})
        return model_dims(model) == published
    except (ConfigError, CheckpointError):  # no known family, an unreadable config.json: not the paper's to say
        return False


def method_table(rs: RunSet) -> pd.DataFrame:
    """The paper's Table 1 layout: rows model x retention x method; success per suite (%, Wilson interval),
    relative accuracy, FLOPs, kept tokens, latency and speedup (cost pooled over the row's suites)."""
    per_suite = suite_table(rs)
    row_of = table1_rows(per_suite, rs)
    overall = _groups(rs, row_of)
    flats = {i: json.loads(i) for i in overall.identity}
    overall = _with_dense(overall, flats, ignore=PER_SUITE_FIELDS)  # a row split by step limit: the dense row
    overall = paired_vs_fastv(overall, flats, _with_row(rs.episodes, row_of))
    per_suite = per_suite.assign(row=[row_of[k] for k in zip(per_suite.identity, per_suite.run_status)])
    rows = []
    for _, row in overall.iterrows():
        mine = per_suite[(per_suite.row == row.identity) & (per_suite.run_status == row.run_status)]
        identities = [rs.identities[i] for i in mine.identity]
        out = {"model": row.model, "device": row.device, "retention_pct": retention_pct(row.pruner, row.keep),
               "method": row.method}
        for _, s in mine.iterrows():
            col = SUITE_COLUMNS.get(s.suite, s.suite)
            out.update({col: s.sr, f"{col}_ci_low": s.sr_ci_low, f"{col}_ci_high": s.sr_ci_high})
        perturbed = mine.suite.map(lambda name: SUITE_COLUMNS.get(name) in PERTURBED_COLUMNS)
        ratios = mine.relative_sr[~perturbed].dropna()
        out["relative_acc_pct"] = 100 * ratios.mean() if len(ratios) else float("nan")
        if perturbed.any():  # LIBERO-PRO suites: the same average over the perturbed suites, beside the paper's
            ratios = mine.relative_sr[perturbed].dropna()
            out["relative_acc_perturbed_pct"] = 100 * ratios.mean() if len(ratios) else float("nan")
        out.update({"prefill_tmacs": row.prefill_tmacs_mean, "prefill_tmacs_pruned": row.prefill_tmacs_mean_pruned,
                    "full_tmacs": row.full_tmacs_mean, "kept_visual": row.kept_visual_mean,
                    "kept_visual_pruned": row.kept_visual_mean_pruned, "latency_ms": row.latency_total_median_ms,
                    "latency_p90_ms": row.latency_total_p90_ms, "speedup": row.speedup,
                    "p_vs_fastv": row.p_vs_fastv, "vs_fastv_pairs": row.vs_fastv_pairs, "vs_fastv": row.vs_fastv,
                    "episodes": row.episodes, "seeds": row.seeds, "seed_values": row.seed_values,
                    "completeness": row.completeness, "run_status": row.run_status,
                    "checkpoint": ", ".join(sorted({checkpoint_label(i) for i in identities} - {""})),
                    "paper_model": bool(identities) and all(paper_model(i) for i in identities),
                    "pruner": row.pruner, "identity": row.identity})
        rows.append(out)
    table = pd.DataFrame(rows)
    table["settings"] = settings_labels(table, flats, ["model", "device", "method"])
    suites = [c for c in dict.fromkeys(SUITE_COLUMNS.values()) if c in table.columns]
    front = ["model", "device", "retention_pct", "method"]
    ordered = front + [c for s in suites for c in (s, f"{s}_ci_low", f"{s}_ci_high")]
    table = table[ordered + [c for c in table.columns if c not in ordered]]
    table = _sorted(table, ["model", "device", "retention_pct", "method"], descending=("retention_pct",))
    return table.drop(columns=["pruner", "identity"])


EPISODE_COLUMNS = ["model", "device", "suite", "task_id", "method", "pruner", "keep", "dense_warmup", "prune_layer",
                   "seed", "init_index", "success", "steps", "status", "queries", "dense_queries", "run_status"]


def episode_table(rs: RunSet) -> pd.DataFrame:
    """Every episode, one row each, with its experiment's method (changed options in brackets), keep, warm-up and
    cut, and its queries (`dense_queries`: dense warm-up ones): enough to pair episodes or recompute any table."""
    counts = rs.queries.groupby(["run_dir", "task_id", "init_index"]).warmup.agg(["size", "sum"]).rename(
        columns={"size": "queries", "sum": "dense_queries"}).reset_index()
    episodes = rs.episodes.merge(counts, on=["run_dir", "task_id", "init_index"], how="left")
    episodes[["queries", "dense_queries"]] = episodes[["queries", "dense_queries"]].fillna(0).astype(int)
    shown = pd.DataFrame([{**rs.columns[e], **{k: flatten(rs.identities[e]).get(f"pruner.{k}")
                                               for k in ("dense_warmup", "prune_layer")}, "experiment": e}
                          for e in episodes.experiment.unique()],
                         columns=["model", "device", "suite", "method", "pruner", "keep", "dense_warmup", "prune_layer",
                                  "experiment"])
    table = episodes.drop(columns=["suite"]).merge(shown, on="experiment")[EPISODE_COLUMNS]
    order = ["model", "suite", "method", "keep", "seed", "task_id", "init_index"]
    return table.sort_values(order, ascending=[k != "keep" for k in order], ignore_index=True, kind="stable")


PI0_NOTE = ("avg_sr = mean success over the suites run (the paper's average is over all four); flops_ratio_pct = "
            "prefix TMACs (560 prefix tokens dense, the two valid cameras + 48 language slots; the empty camera is "
            "left out of the prefix), mean over all queries, as % of the dense row's (_pruned: over the pruned "
            "queries, the paper's convention); full_flops_ratio_pct = vision + prefix + the expert's 10 steps, "
            "as % of dense")


def paper_table(model: dict) -> str | None:
    """The paper's own table of the model's family (`ModelFamily.paper_table`), if it has one."""
    from vla_pruner.families import family_names, model_family

    family = model.get("family")
    return model_family(family).paper_table if family in family_names() else None


def pi0_table(rs: RunSet) -> pd.DataFrame:
    """The paper's Table 4 layout: the Table 1 rows of pi0-family models, with the average success over the suites
    run and FLOPs as % of the same model's dense row (prefix, and end to end); empty without pi0 runs."""
    models = {identity["model"]["name"] for identity in rs.identities.values()
              if paper_table(identity.get("model") or {}) == "table4"}
    table = method_table(rs)
    table = table[table.model.isin(models)].reset_index(drop=True)
    suites = [c for c in dict.fromkeys(SUITE_COLUMNS.values()) if c in table.columns and c not in PERTURBED_COLUMNS]
    table.insert(table.columns.get_loc("relative_acc_pct"), "avg_sr", table[suites].mean(axis=1))
    ratios = {"prefill_tmacs": "flops_ratio_pct", "prefill_tmacs_pruned": "flops_ratio_pct_pruned",
              "full_tmacs": "full_flops_ratio_pct"}
    dense = table[table.method == METHOD_NAMES[DENSE_PRUNER]].groupby("model")[list(ratios)].first()
    for column, ratio in ratios.items():
        table.insert(table.columns.get_loc(column), ratio, 100 * table[column] / table.model.map(dense[column]))
    return table


# --------------------------------------------------------------------------------------------- writing


def _exact(value) -> str:
    """A configured number as written: 0.25 -> '0.25', 25.0 -> '25', 12.5 -> '12.5'."""
    return "" if pd.isna(value) else format(value, ".12g")


def display_frame(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Human-readable copy: each `X` with `X_ci_low`/`X_ci_high` becomes "X [lo, hi]", floats rounded, keep and
    retention as configured."""
    out = table.copy()
    for col in [c for c in table.columns if f"{c}_ci_low" in table.columns]:
        out[col] = [
            "" if pd.isna(v) else f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            for v, lo, hi in zip(table[col], table[f"{col}_ci_low"], table[f"{col}_ci_high"])
        ]
        out = out.drop(columns=[f"{col}_ci_low", f"{col}_ci_high"])
    for col in out.columns:
        if col in EXACT_COLUMNS:
            out[col] = out[col].map(_exact)
        elif not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].fillna("")
        elif pd.api.types.is_float_dtype(out[col]):
            # FLOPs with 4 significant digits: a tiny model's 0.0004 T must not print as 0.000
            spec = ".4g" if "tmacs" in col else ".3f" if col == "speedup" else ".2g" if col.startswith("p_") else f".{digits}f"
            out[col] = out[col].map(lambda v, f=spec: "" if pd.isna(v) else format(v, f))
    return out


def write_table(table: pd.DataFrame, out_dir: Path, name: str, caption: str, digits: int = 1) -> list[Path]:
    """`name`.csv (numbers), `name`.md and `name`.tex (formatted, with the caption; floats to `digits`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = display_frame(table, digits)
    paths = [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(f"{caption}\n\n{shown.to_markdown(index=False)}\n")
    paths[2].write_text(shown.to_latex(index=False, caption=caption, label=f"tab:{name}", escape=True))
    return paths


def write_report(rs: RunSet, out_dir: Path) -> list[Path]:
    """All tables (per task, per suite, Table 1 layout; Table 4 layout with pi0 runs) and all plots into out_dir."""
    per_suite = suite_table(rs)
    written = [
        *write_table(task_table(rs), out_dir, "tasks", f"Success per task. {UNITS_NOTE}; {ROWS_NOTE}."),
        *write_table(per_suite.drop(columns=["identity", "dense_identity", "dense_status"]), out_dir, "suites",
                     f"Per suite. {UNITS_NOTE}; relative_sr = SR_method / SR_dense; {ROWS_NOTE}."),
        *write_table(method_table(rs), out_dir, "table1",
                     f"Table 1 layout. {UNITS_NOTE}; {RELATIVE_ACC_NOTE}; {ROWS_NOTE}."),
    ]
    episodes = out_dir / "episodes.csv"
    episode_table(rs).to_csv(episodes, index=False)
    written.append(episodes)
    pi0 = pi0_table(rs)
    if len(pi0):
        written += write_table(pi0, out_dir, "table4", f"Table 4 layout (pi0). {UNITS_NOTE}; {PI0_NOTE}; "
                                                       f"{RELATIVE_ACC_NOTE}; {ROWS_NOTE}.")
    robust = robustness_table(rs, per_suite)
    if len(robust):
        written += write_table(robust, out_dir, "robustness", f"Pruning under perturbation. {ROBUSTNESS_NOTE}")
        written += drop_plots(robust, out_dir)
    return written + write_plots(per_suite, out_dir)


def load_runs_for_cli(paths: list[str]) -> RunSet:
    """`load_runs` for a command: the loader's warnings (unreadable files) as one `warning:` line each on stderr,
    a path that does not exist as an `error:` exit."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        return load_runs(paths)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(prog="python -m evaluate.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or directories above them (e.g. runs/)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where tables and plots go")
    args = parser.parse_args(argv)
    out = output_directory(args.out)
    for path in write_report(load_runs_for_cli(args.runs), out):
        print(path)

