"""The cross-check table: the harness's success on a task beside vla-eval's own LIBERO benchmark's, run against our
server with the same policy (docs/serving.md), each with its 95% Wilson interval, paired by init state.

    python scripts/crosscheck.py --ours RUN_DIR --vla-eval OUT_DIR [--served RUN_DIR] [--task 0]

RUN_DIR: a harness run directory (`python -m evaluate ...`); OUT_DIR: `vla-eval run --output-dir`'s (its
`*_aggregate.json`); --served: the server's records of that vla-eval run (`python -m evaluate.serve`), which must
agree with vla-eval's own outcomes. Prints a Markdown table, then the pairs: episodes both sides solved, only one
did (with the exact McNemar p-value of the difference), neither, and how many took the same number of steps.
"""
from __future__ import annotations

import argparse
import json
import sys
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
    left out here)."""
    found = sorted(out_dir.glob("*_aggregate.json"))
    if len(found) != 1:
        sys.exit(f"error: {out_dir} holds {len(found)} vla-eval *_aggregate.json files, not one")
    tasks = json.loads(found[0].read_text())["tasks"]
    episodes = [e for t in tasks for e in t["episodes"] if e.get("task_id") == task_id]
    ok = {e["episode_idx"]: (bool(e["metrics"]["success"]), int(e["steps"])) for e in episodes
          if not e.get("failure_reason")}
    return ok, len(episodes) - len(ok)


def row(name: str, outcomes: Outcomes, errors: int = 0) -> str:
    n, k = len(outcomes), sum(success for success, _ in outcomes.values())
    low, high = wilson_interval(k, n)
    steps = [s for success, s in outcomes.values() if success]
    mean = f"{sum(steps) / len(steps):.1f}" if steps else "-"
    return f"| {name} | {n} | {k} | {100 * k / n:.1f} [{100 * low:.1f}, {100 * high:.1f}] | {mean} | {errors} |"


def main() -> None:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", type=Path, required=True, help="the harness's run directory")
    parser.add_argument("--vla-eval", type=Path, required=True, help="vla-eval run's --output-dir")
    parser.add_argument("--served", type=Path, help="the server's records of the vla-eval run")
    parser.add_argument("--task", type=at_least(0), default=0)
    args = parser.parse_args()
    ours = harness_outcomes(args.ours, args.task)
    theirs, errors = vla_eval_outcomes(args.vla_eval, args.task)
    if not ours or not theirs:
        sys.exit(f"error: no finished episode of task {args.task} in {args.ours if not ours else args.vla_eval}")
    print("| evaluation | episodes | successes | success % [95% Wilson] | mean steps of successes | errors |")
    print("|---|---:|---:|---|---:|---:|")
    print(row("the harness (`python -m evaluate`)", ours))
    print(row("vla-eval's LIBERO benchmark against `python -m evaluate.serve`", theirs, errors))
    if args.served:
        served = harness_outcomes(args.served, args.task)
        print(row("... as the server recorded it", served))
        disagree = sorted(i for i in served.keys() | theirs.keys() if served.get(i) != theirs.get(i))
        print(f"\nserver records vs vla-eval's own: {len(disagree)} episode(s) differ" +
              (f" (init states {disagree})" if disagree else ""))
    shared = sorted(ours.keys() & theirs.keys())
    both = sum(ours[i][0] and theirs[i][0] for i in shared)
    only_ours = sum(ours[i][0] and not theirs[i][0] for i in shared)
    only_theirs = sum(theirs[i][0] and not ours[i][0] for i in shared)
    same_steps = sum(ours[i] == theirs[i] for i in shared)
    print(f"\npaired over {len(shared)} init states: both solved {both}, only the harness {only_ours}, only vla-eval "
          f"{only_theirs}, neither {len(shared) - both - only_ours - only_theirs}; exact McNemar p = "
          f"{mcnemar_exact(only_ours, only_theirs):.3g}; same outcome and steps: {same_steps}")


if __name__ == "__main__":
    main()
