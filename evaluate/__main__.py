"""`python -m evaluate [overrides]`: evaluate a policy on a LIBERO suite (Hydra app; see README.md and docs/).

A user's mistake (bad value, checkpoint, output directory, a directory another job is writing) ends a run
with one `error:` line and a non-zero exit; a bug in our own code keeps its traceback. In a sweep (`-m`)
every point is checked before any runs; a point that fails while running is recorded, the others go on,
and the sweep exits non-zero listing the failed points.
"""
from __future__ import annotations

from evaluate.interrupt import STOPS, Stopped, stop_on_signals

if __name__ == "__main__":  # before the seconds of imports below: an early SIGTERM gets the one-line stop message
    stop_on_signals()

import json
import logging
import os
import signal
import sys
import uuid
from pathlib import Path

import hydra
from omegaconf import DictConfig

from evaluate.config import ConfigError, check_group_overrides, compose_each_point_once, validate
from evaluate.store import StoreError

log = logging.getLogger(__name__)
FAILURES_ENV = "VLA_PRUNER_SWEEP_FAILURES"  # where the points of this sweep record their failures
SUBMITIT_JOB = "SUBMITIT_EXECUTOR"  # set in a job that submitit runs as a process of its own


def policies() -> dict:
    from evaluate.policies import POLICIES

    return POLICIES


def user_errors() -> tuple[type[BaseException], ...]:
    from evaluate.policy import NonFiniteAction
    from vla_pruner.models.checkpoint import CheckpointError

    return (ConfigError, StoreError, CheckpointError, NonFiniteAction)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from evaluate.preflight import checked_here
    from evaluate.runner import run

    try:
        if not checked_here(cfg):  # a job of its own (a cluster job): not checked in this process yet
            validate(cfg, policies())
        summary = run(cfg)
    except user_errors() as e:
        return _fail(str(e))
    except Stopped as e:
        message = (f"stopped by {e} before the run finished; finished episodes are saved in {cfg.output_dir}: "
                   "re-run the same command to resume")
        if SUBMITIT_JOB not in os.environ:  # Ctrl-C of a run, or of a sweep running its points here: stop it all
            sys.exit(f"error: {message}")
        # a cluster job (time limit, scancel, preemption): recorded like a failure, and the job ends normally,
        # leaving the result its launcher waits for
        return _fail(message)
    except Exception as e:
        if not _in_sweep():
            raise
        log.exception("sweep point failed")
        return _fail(f"{type(e).__name__}: {e}".splitlines()[0])
    print(json.dumps({k: summary[k] for k in ("run_dir", "episodes", "successes", "success_rate", "complete")}))


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return FAILURES_ENV in os.environ and HydraConfig.get().mode == RunMode.MULTIRUN


def _fail(message: str) -> None:
    """A single run exits with `error: message`; a sweep point records it for the sweep's final report and
    returns, so that the other points run."""
    if not _in_sweep():
        sys.exit(f"error: {message}")
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    print(f"error: {message}", file=sys.stderr)
    record_failure(hydra_cfg.job.num, list(hydra_cfg.overrides.task), message)


def record_failure(job: int, overrides: list[str], message: str) -> None:
    """Keeps a failed point for the sweep's final report (written by the point's job, or by this process for
    a job that ended without its result)."""
    record = {"job": job, "overrides": overrides, "error": message}
    Path(os.environ[FAILURES_ENV], f"job{job:05d}.json").write_text(json.dumps(record))


def _report_sweep_failures(directory: Path) -> None:
    failures = [json.loads(p.read_text()) for p in sorted(directory.glob("job*.json"))]
    if failures:
        lines = [f"  point {f['job']} ({' '.join(f['overrides'])}): {f['error']}" for f in failures]
        sys.exit("\n".join([f"error: {len(failures)} sweep point(s) failed; the others ran:", *lines]))


def cli() -> None:
    try:
        _cli(sys.argv[1:])
    except Stopped as e:  # before the run's own handling (checks, Hydra's start) or after it
        _stopped(e.signum)
    except Exception:
        if not STOPS:
            raise
        # a signal that landed inside an import leaves that module half made, and the next use of it fails with
        # some other error: the cause is the stop, and so is the message
        _stopped(STOPS[0])


def _stopped(signum: int) -> None:
    sys.exit(f"error: stopped by {signal.Signals(signum).name}; finished episodes are saved: re-run the same command "
             "to resume")


def _cli(args: list[str]) -> None:
    compose_each_point_once()  # the check below and Hydra's start of each run read one composition
    try:
        from evaluate.envs.suites import REFUSED_SUITES

        check_group_overrides(args, {"suite": REFUSED_SUITES})  # before the model choice composes anything
        from evaluate.model_choice import choose_model
        from evaluate.preflight import check_command

        args, choice = choose_model(args, policies())
        if choice:
            print(choice, flush=True)
        sys.argv[1:] = args  # Hydra reads the command line from here, in this process and in a sweep's jobs
        configs = check_command(args, policies())
    except user_errors() as e:
        sys.exit(f"error: {e}")
    if not any(a in ("-m", "--multirun") for a in args):
        return main()
    # under the sweep's output root, which cluster jobs share with the submitting process; the path
    # reaches the jobs through the environment (submitit's jobs inherit it)
    directory = Path(configs[0].output_root).absolute() / ".sweep_failures" / uuid.uuid4().hex[:12]
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[FAILURES_ENV] = str(directory)
    from evaluate.slurm_jobs import following_slurm_jobs

    with following_slurm_jobs(record_failure):  # job states without sacct; a job killed outright is a failed point
        main()
    _report_sweep_failures(directory)


if __name__ == "__main__":
    cli()
