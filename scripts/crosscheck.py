"""The cross-check table: the harness's success on a task beside vla-eval's own LIBERO benchmark's, run against our
server with the same policy (docs/serving.md), each with its 95% Wilson interval, paired by init state.

    python scripts/crosscheck.py --ours RUN_DIR --vla-eval OUT_DIR [--served RUN_DIR] [--task 0] [--out DIR]

RUN_DIR: a harness run directory (`python -m evaluate ...`); OUT_DIR: `vla-eval run --output-dir`'s (its
`*_aggregate.json`); --served: the server's records of that vla-eval run (`python -m evaluate.serve`), which must
agree with vla-eval's own outcomes. Prints a Markdown table (per side: successes, 95% Wilson interval, mean steps of the
successes), then the pairs: episodes both sides solved, only one did (the discordant pairs, with the exact McNemar
p-value), neither, and how many took the same number of steps; --out DIR writes it as crosscheck.md and crosscheck.csv.
A vla-eval run still going is read from its recording, as far as it got.
"""
from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluate.analysis.stats import mcnemar_exact, wilson_interval  # noqa: E402
from evaluate.arguments import CommandParser, at_least  # noqa: E402
from evaluate.store import ResultStore  # noqa: E402

Outcomes = dict[int, tuple[bool, int]]  # init state -> (success, steps)


def harness_outcomes(run_dir: Path, task_id: int) -> Outcomes:
    if not (run_dir / "episodes").is_dir():
        sys.exit(f"error: {run_dir} is not a run directory (no episodes/)")
    return {r.init_index: (r.success, r.steps) for r in ResultStore(run_dir).records()
            if r.task_id == task_id and r.status == "ok"}


def vla_eval_outcomes(out_dir: Path, task_id: int) -> tuple[Outcomes, int]:
    """Outcomes of vla-eval's episodes of the task, and how many ended in an error (counted as failures by vla-eval,
    left out here). From its `*_aggregate.json` once the run is exported, else from its recording (read only), so a
    run still going is read as far as it got."""
    found = sorted(out_dir.glob("*_aggregate.json"))
    if len(found) > 1:
        sys.exit(f"error: {out_dir} holds {len(found)} vla-eval *_aggregate.json files, not one")
    if found:
        tasks = json.loads(found[0].read_text())["tasks"]
        episodes = [e for t in tasks for e in t["episodes"] if e.get("task_id") == task_id]
    else:
        episodes = recorded_episodes(out_dir, task_id)
    ok = {e["episode_idx"]: (bool(e["metrics"]["success"]), int(e["steps"])) for e in episodes
          if not e.get("failure_reason")}
    return ok, len(episodes) - len(ok)


def recorded_episodes(out_dir: Path, task_id: int) -> list[dict]:
    """The finished episodes in vla-eval's `recording-<eval id>.sqlite`, as its aggregate file lists them."""
    found = sorted(out_dir.glob("recording-*.sqlite"))
    if len(found) != 1:
        sys.exit(f"error: {out_dir} holds neither a vla-eval *_aggregate.json nor one recording-*.sqlite")
    with closing(sqlite3.connect(f"file:{found[0]}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT metrics, steps, context, failure_reason FROM episode_results").fetchall()
    episodes = [{**json.loads(context), "metrics": json.loads(metrics or "{}"), "steps": steps or 0,
                 "failure_reason": failure} for metrics, steps, context, failure in rows]
    return [e for e in episodes if e.get("task_id") == task_id]


@dataclass
class Side:
    """One evaluation's outcomes, summarised."""

    name: str
    outcomes: Outcomes
    errors: int = 0

    def summary(self) -> dict:
        n, k = len(self.outcomes), sum(success for success, _ in self.outcomes.values())
        low, high = wilson_interval(k, n)
        steps = [s for success, s in self.outcomes.values() if success]
        return {"evaluation": self.name, "episodes": n, "successes": k, "success_pct": round(100 * k / n, 1),
                "wilson_low_pct": round(100 * low, 1), "wilson_high_pct": round(100 * high, 1),
                "mean_steps_of_successes": round(sum(steps) / len(steps), 1) if steps else None,
                "errors": self.errors}


def paired(ours: Outcomes, theirs: Outcomes) -> dict:
    """The init states both sides ran: concordant and discordant outcomes, the exact McNemar p of the discordant."""
    shared = sorted(ours.keys() & theirs.keys())
    only_ours = sum(ours[i][0] and not theirs[i][0] for i in shared)
    only_theirs = sum(theirs[i][0] and not ours[i][0] for i in shared)
    both = sum(ours[i][0] and theirs[i][0] for i in shared)
    return {"pairs": len(shared), "both_solved": both, "only_harness": only_ours, "only_vla_eval": only_theirs,
            "neither": len(shared) - both - only_ours - only_theirs,
            "mcnemar_exact_p": round(mcnemar_exact(only_ours, only_theirs), 4),
            "same_outcome_and_steps": sum(ours[i] == theirs[i] for i in shared),
            "other_steps": {i: (ours[i][1], theirs[i][1]) for i in shared if ours[i] != theirs[i]}}


def markdown(sides: list[Side], pairs: dict, disagree: list[int] | None) -> str:
    lines = ["| evaluation | successes | success % [95% Wilson] | mean steps of successes | errors |",
             "|---|---:|---|---:|---:|"]
    for side in sides:
        s = summary = side.summary()
        steps = "-" if summary["mean_steps_of_successes"] is None else summary["mean_steps_of_successes"]
        lines.append(f"| {s['evaluation']} | {s['successes']}/{s['episodes']} | {s['success_pct']} "
                     f"[{s['wilson_low_pct']}, {s['wilson_high_pct']}] | {steps} | {s['errors']} |")
    p = pairs
    lines += ["", f"Paired by init state ({p['pairs']} shared): both solved {p['both_solved']}, only the harness "
              f"{p['only_harness']}, only vla-eval {p['only_vla_eval']}, neither {p['neither']}; discordant pairs "
              f"{p['only_harness'] + p['only_vla_eval']}, exact McNemar p = {p['mcnemar_exact_p']:.3g}; same outcome "
              f"and same number of steps: {p['same_outcome_and_steps']}."]
    if p["other_steps"]:
        lines.append("Other step counts (init state: the harness's vs vla-eval's): "
                     + ", ".join(f"{i}: {a} vs {b}" for i, (a, b) in p["other_steps"].items()) + ".")
    if disagree is not None:
        lines.append(f"The server's records against vla-eval's own: {len(disagree)} episode(s) differ"
                     + (f" (init states {disagree})." if disagree else "."))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", type=Path, required=True, help="the harness's run directory")
    parser.add_argument("--vla-eval", type=Path, required=True, help="vla-eval run's --output-dir")
    parser.add_argument("--served", type=Path, help="the server's records of the vla-eval run")
    parser.add_argument("--task", type=at_least(0), default=0)
    parser.add_argument("--out", type=Path, help="also write crosscheck.md and crosscheck.csv into this directory")
    args = parser.parse_args()
    ours = harness_outcomes(args.ours, args.task)
    theirs, errors = vla_eval_outcomes(args.vla_eval, args.task)
    if not ours or not theirs:
        sys.exit(f"error: no finished episode of task {args.task} in {args.ours if not ours else args.vla_eval}")
    sides = [Side("the harness (`python -m evaluate`)", ours),
             Side("vla-eval's LIBERO benchmark against `python -m evaluate.serve`", theirs, errors)]
    if theirs.keys() < ours.keys():  # a vla-eval run still going: the harness on the same init states beside it
        sides.insert(1, Side(f"the harness on the {len(theirs)} init states vla-eval has run",
                             {i: ours[i] for i in theirs}))
    disagree = None
    if args.served:
        served = harness_outcomes(args.served, args.task)
        sides.append(Side("... as the server recorded it", served))
        disagree = sorted(i for i in served.keys() | theirs.keys() if served.get(i) != theirs.get(i))
    pairs = paired(ours, theirs)
    text = markdown(sides, pairs, disagree)
    print(text, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "crosscheck.md").write_text(text)
        with open(args.out / "crosscheck.csv", "w", newline="") as f:
            counts = {k: v for k, v in pairs.items() if k != "other_steps"}
            rows = [{**side.summary(), **counts} for side in sides]
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
