"""How the process that launched a sweep follows its SLURM jobs (Hydra's submitit launcher), made to hold up on
a real cluster.

- Job states. submitit asks `sacct`; where accounting is disabled (no slurmdbd) sacct fails on every poll, which
  printed its error and a warning each time, and a job that died without its result was never seen to end: the
  sweep waited forever. SlurmWatcher tries sacct once; if it fails it says so in one line and asks
  `squeue --states=all`, which lists a finished job for the cluster's MinJobAge (300 s by default): a job of the
  sweep that squeue no longer lists has ended.
- A job that ends without its result (killed when KillWait ran out before it stopped, for memory, with its
  node; cancelled while pending) made submitit raise in the launching process, ending the sweep while the other
  jobs ran on. Here it is one failed point of the sweep's final report, and the launcher waits for the others.
Both are installed around the sweep (evaluate/__main__.py); Hydra only loads launchers from `hydra_plugins`,
so these adjust submitit's SlurmJob class, for the sweep's duration.
"""
from __future__ import annotations

import getpass
import logging
import subprocess
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from hydra.core.utils import JobReturn, JobStatus
from submitit.core.utils import UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)
HEADER = "JobID|State|NodeList"  # sacct's --parsable2 header, which read_info parses
SQUEUE = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"]
ENDED = "ENDED"  # the state of a job squeue no longer lists
# squeue's states that end a job; submitit takes any state outside its short list of live ones as the end, so
# squeue's other live states (CONFIGURING, COMPLETING, SUSPENDED, REQUEUE_HOLD, ...) are reported as RUNNING
FINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "TIMEOUT", ENDED}


class SlurmWatcher(SlurmInfoWatcher):
    def __init__(self, delay_s: int):
        super().__init__(delay_s=delay_s)
        self.sacct_failed = False

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            self._info_dict.update(self._states(command))
        except (OSError, subprocess.SubprocessError) as e:  # the controller busy or unreachable: ask again later
            log.warning("could not read job states (%s); asking again at the next poll", e)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _states(self, sacct: list[str]) -> dict[str, dict[str, str]]:
        if not self.sacct_failed:
            result = subprocess.run(sacct, capture_output=True, text=True, timeout=60)
            if result.returncode == 0:
                return self.read_info(result.stdout)
            self.sacct_failed = True
            reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
            log.warning("sacct is unavailable (%s): following this sweep's jobs with squeue", reason)
        listed = subprocess.run([*SQUEUE, f"--user={getpass.getuser()}"], capture_output=True, text=True,
                                timeout=60, check=True).stdout
        states = self.read_info(f"{HEADER}\n{listed}")
        gone = self._registered - self._finished - set(states)
        states.update({job_id: {"JobID": job_id, "State": ENDED} for job_id in gone})
        return {job_id: {**info, "State": _as_submitit_state(info["State"])} for job_id, info in states.items()}


def _as_submitit_state(state: str) -> str:
    return state if state in FINAL or state == "PENDING" else "RUNNING"


@contextmanager
def following_slurm_jobs(record_failure: Callable[[int, list[str], str], None]) -> Iterator[None]:
    """While a sweep runs in this process: SlurmWatcher for its SLURM jobs, and a job that ended without its
    result passed to `record_failure(point number, overrides, message)` (submitit's launcher collects each
    job's result through SlurmJob.results)."""
    watcher, collect = SlurmJob.watcher, SlurmJob.results

    def results(job: SlurmJob) -> list[JobReturn]:
        try:
            return collect(job)
        except UncompletedJobError:
            overrides, _, number = job.submission().args[:3]  # what Hydra's launcher submitted for the point
            record_failure(number, list(overrides), lost_job_message(job))
            return [JobReturn(overrides=overrides, status=JobStatus.COMPLETED)]  # reported by the sweep, not raised

    SlurmJob.watcher, SlurmJob.results = SlurmWatcher(delay_s=watcher._delay_s), results
    try:
        yield
    finally:
        SlurmJob.watcher, SlurmJob.results = watcher, collect


def lost_job_message(job: SlurmJob) -> str:
    return (f"job {job.job_id} ended without its result (SLURM state {job.state}: killed before it could stop, "
            f"for memory or with its node; log: {job.paths.stderr}); finished episodes are saved: re-run the same "
            "command to resume")
