"""Launch the paper's sweep (models x suites x pruners x retentions) as Hydra multiruns of `python -m evaluate`.

    python scripts/sweep.py                                  # the paper's grid, Hydra's sequential launcher
    python scripts/sweep.py --launcher slurm --shard-tasks -- hydra.launcher.partition=gpu
    python scripts/sweep.py --models openvla -- model.checkpoints.libero_spatial=/ckpt/openvla-7b-finetuned-libero-spatial ...
    python scripts/sweep.py --dry-run                        # print the commands only

Per model two multiruns: the dense baseline once per suite (`pruner=none keep=1.0`: the dense model ignores
`keep`, so it is not repeated per retention) and the pruners x retentions grid. `--shard-tasks` makes every
task its own job (`tasks=[0],[1],...`): the shards of one experiment write to the same run directory, each to
its own `episodes/taskNN.jsonl`, and the directory is `complete` only once every shard is. Re-running the same sweep resumes every run (finished episodes are skipped).
Anything after `--` is passed to every multirun as Hydra overrides.
With `--launcher slurm` the multiruns are submitted together (each waits for its job array); otherwise they
run one after another on this machine.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from itertools import groupby
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluate.__main__ import user_errors  # noqa: E402
from evaluate.arguments import CommandParser  # noqa: E402
from evaluate.envs.suites import SUITES, suite_info  # noqa: E402

PAPER = {
    "models": ["openvla", "openvla_oft"],
    "suites": [s.option for s in SUITES if s.in_paper],
    "pruners": ["fastv", "sparsevlm", "divprune", "vla_cache", "vla"],
    "keeps": ["0.5", "0.25", "0.125"],
    "seeds": ["7"],
}
DENSE = ["pruner=none", "keep=1.0"]
# --launcher choice -> Hydra launcher override (None: Hydra's built-in sequential launcher)
LAUNCHERS = {"basic": None, "local": "hydra/launcher=local", "slurm": "hydra/launcher=slurm"}
CONCURRENT = {"slurm"}  # launchers whose multiruns only wait for a cluster: submit them together


def task_shards(n_tasks: int) -> list[str]:
    """One job per task; each declares every task, so the directory is complete only once all shards are."""
    return ["tasks=" + ",".join(f"[{t}]" for t in range(n_tasks)),
            "expected_tasks=[" + ",".join(map(str, range(n_tasks))) + "]"]


def build_commands(args: argparse.Namespace) -> list[list[str]]:
    launcher = [LAUNCHERS[args.launcher]] if LAUNCHERS[args.launcher] else []
    by_tasks = lambda s: suite_info(s).tasks  # noqa: E731  (a shard list fits one task count)
    suite_groups = [list(g) for _, g in groupby(sorted(args.suites, key=by_tasks), key=by_tasks)]
    grids = [DENSE, [f"pruner={','.join(args.pruners)}", f"keep={','.join(args.keeps)}"]] if args.pruners else [DENSE]
    commands = []
    for model in args.models:
        for suites in suite_groups:
            shards = task_shards(by_tasks(suites[0])) if args.shard_tasks else []
            for grid in grids:
                commands.append([sys.executable, "-m", "evaluate", "-m", f"model={model}", f"suite={','.join(suites)}",
                                 *grid, f"seed={','.join(args.seeds)}", *shards, *launcher, *args.overrides])
    return commands


def run(commands: list[list[str]], concurrent: bool) -> int:
    if concurrent:
        processes = [subprocess.Popen(c, cwd=REPO) for c in commands]
        return max(p.wait() for p in processes)
    return max((subprocess.run(c, cwd=REPO).returncode for c in commands), default=0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    for key, values in PAPER.items():
        parser.add_argument(f"--{key}", nargs="*" if key == "pruners" else "+", default=values,
                            help=f"default: {' '.join(values)}")
    parser.add_argument("--shard-tasks", action="store_true", help="one job per task instead of per suite")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="basic",
                        help="basic = one job after another in this process; local/slurm = submitit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (after --)")
    return parser.parse_args(argv)


def check_commands(commands: list[list[str]]) -> None:
    """Every point of every multirun, checked as `python -m evaluate` checks its own before any runs (values,
    combinations a run refuses, checkpoints, output directories): a bad point stops the sweep before the first
    multirun starts (the dense baseline would otherwise run whole before a pruned point is refused)."""
    from evaluate.policies import POLICIES
    from evaluate.preflight import check_command

    for command in commands:
        check_command(command[3:], POLICIES)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        commands = build_commands(args)
        check_commands(commands)
    except user_errors() as e:
        sys.exit(f"error: {e}")
    for command in commands:
        print(shlex.join(["python", *command[1:]]), flush=True)
    if not args.dry_run:
        sys.exit(run(commands, concurrent=args.launcher in CONCURRENT))


if __name__ == "__main__":
    main()
