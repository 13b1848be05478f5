"""Episodes per hour with num_envs simulator workers against one process, on the same fixed episodes.

Runs the real CLI (`python -m evaluate`) on libero_object task 0, --episodes episodes of --max-steps steps, for
`policy=noop` (the simulator alone) and the tiny OpenVLA with `pruner=vla keep=0.25`, at num_envs=1 and each
--num-envs value, settings interleaved round by round (--rounds) so that a shared machine's drift hits all alike.
Episodes/hour is the run's own measure (summary.json "throughput"): "whole" over its episode loop (workers'
start-up and env creation included; Python start-up and model loading before it are not) and "sustained" from
the num_envs-th recorded episode to the last (every worker past its start-up: what a long run gets). Ratios are
taken within a round, then the median over rounds; the last line's ratio is the sustained one.

    python scripts/bench_throughput.py [--episodes 8] [--max-steps 40] [--num-envs 2] [--rounds 1]

The LAST line reads `throughput ratio num_envs=2 vs 1: <x>` for the tiny OpenVLA + VLA-Pruner case.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluate.arguments import CommandParser, at_least  # noqa: E402
from evaluate.envs.suites import suite_info  # noqa: E402

POLICIES = {
    "noop": ["policy=noop"],
    "openvla_tiny + VLA-Pruner 0.25": ["policy=vla", "model=openvla_tiny", "pruner=vla", "keep=0.25"],
}
INIT_STATES = suite_info("libero_object").init_states  # the benchmark's task: episode i starts from init state i
KINDS = {"whole": "episodes_per_hour", "sustained": "sustained_episodes_per_hour"}


def run(overrides: list[str], num_envs: int, root: Path) -> dict:
    """One run in a fresh output directory; its summary's throughput."""
    command = [sys.executable, "-m", "evaluate", *overrides, f"num_envs={num_envs}", f"output_root={root}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    [summary] = list(root.rglob("summary.json"))
    return json.loads(summary.read_text())["throughput"]


def main() -> None:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=at_least(1), default=8, help=f"1..{INIT_STATES} (init states)")
    parser.add_argument("--max-steps", type=at_least(1), default=40)
    parser.add_argument("--num-envs", type=at_least(2), nargs="+", default=[2], help="worker counts to compare with 1")
    parser.add_argument("--rounds", type=at_least(1), default=1)
    args = parser.parse_args()
    if args.episodes > INIT_STATES:
        parser.error(f"--episodes {args.episodes} is more than the {INIT_STATES} init states of a task")
    if 2 not in args.num_envs:
        parser.error("--num-envs must include 2 (the last line compares num_envs=2 with 1)")
    common = ["suite=libero_object", "tasks=[0]", f"episodes_per_task={args.episodes}",
              f"suite.max_steps={args.max_steps}"]
    counts = [1, *args.num_envs]
    print(f"{os.cpu_count()} cores; libero_object task 0, {args.episodes} episodes x {args.max_steps} steps; "
          f"{args.rounds} round(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    rates: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name, overrides in POLICIES.items():
                for n in counts:
                    root = Path(tmp) / f"r{round_index}" / name.split()[0] / f"n{n}"
                    throughput = run([*common, *overrides], n, root)
                    for kind, key in KINDS.items():
                        rates.setdefault((name, n, kind), []).append(throughput[key])
                    print(f"  round {round_index}: {name}, num_envs={n}: "
                          f"{throughput['episodes_per_hour']:.0f} episodes/hour whole, "
                          f"{throughput['sustained_episodes_per_hour']:.0f} sustained", flush=True)

    def ratio(name: str, n: int, kind: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[name, n, kind], rates[name, 1, kind]))

    print("\nepisodes/hour (median over rounds) and ratios to num_envs=1, whole run / sustained")
    print("| policy | " + " | ".join(f"num_envs={n}" for n in counts) + " | "
          + " | ".join(f"ratio {n} vs 1" for n in counts[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(counts) - 1))
    for name in POLICIES:
        cells = [" / ".join(f"{statistics.median(rates[name, n, kind]):.0f}" for kind in KINDS) for n in counts]
        cells += [" / ".join(f"{ratio(name, n, kind):.2f}" for kind in KINDS) for n in counts[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"throughput ratio num_envs=2 vs 1: {ratio('openvla_tiny + VLA-Pruner 0.25', 2, 'sustained'):.2f}")


if __name__ == "__main__":
    main()
