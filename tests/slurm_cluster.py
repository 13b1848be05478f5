"""A real single-node SLURM cluster for the tests (scripts/slurm_local.sh), and what the tests ask of it.

The cluster runs where scripts/slurm_local.sh can start one: as root on Debian/Ubuntu, with slurm installed or
apt-get to install it (.ci/run installs it). Elsewhere the SLURM tests skip saying why; under CI=true they fail.
KillWait is SLURM's default, 30 s: a run stops after the simulator call under way, which on a busy machine (env
creation, a reset) can take longer than a "small" KillWait of 5 s; a job that stops costs no KillWait at all.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "slurm_local.sh"
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "srun")


def why_no_cluster() -> str | None:
    if os.geteuid() != 0:
        return "starting a SLURM cluster needs root (munged, slurmctld and slurmd run here)"
    if not all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS) and not shutil.which("apt-get"):
        return "slurm is not installed and there is no apt-get to install it (Debian/Ubuntu only)"
    return None


def skip_or_fail(reason: str) -> None:
    """CI always has a cluster (.ci/run installs slurm), so there its absence fails loudly."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but no SLURM cluster: {reason}", pytrace=False)
    pytest.skip(f"no SLURM cluster: {reason}")


@dataclass
class Cluster:
    env: dict[str, str]  # this environment with SLURM_CONF pointing at the cluster (and MUJOCO_GL for the jobs)

    def run(self, *command: str, timeout: float = 60) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"
        return result.stdout

    def jobs(self) -> dict[str, str]:
        """Job (array task) id -> state, for every job the controller still knows."""
        listed = self.run("squeue", "--noheader", "--array", "--states=all", "--format=%i %T")
        return dict(line.split() for line in listed.splitlines())

    def final_states(self) -> dict[str, str]:
        """jobs() once none is running: a job's result is written before its process, step and job end."""
        self.wait_idle()
        return self.jobs()

    def wait_idle(self, timeout: float = 120) -> None:
        """No job pending or running, so that a test starts on a free node."""
        deadline = time.time() + timeout
        while any(state in ("PENDING", "RUNNING", "COMPLETING") for state in self.jobs().values()):
            assert time.time() < deadline, f"jobs still running after {timeout} s: {self.jobs()}"
            time.sleep(1)


def start(directory: Path) -> Cluster:
    result = subprocess.run(["bash", str(SCRIPT), "start", str(directory)], capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        stop(directory)
        raise RuntimeError(f"{SCRIPT.name} start failed: {result.stderr.strip()}")
    conf = result.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    return Cluster({**os.environ, "SLURM_CONF": conf, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})


def stop(directory: Path) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120)
