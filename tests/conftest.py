import evaluate.envs.triton_before_mujoco  # noqa: F401,I001  (first: a test module may load MuJoCo directly)

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def composed(*overrides: str):
    """configs/config.yaml composed with Hydra overrides, as a run composes it."""
    from hydra import compose, initialize_config_dir

    from evaluate.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def noop_run_dir(root: Path, suite: str) -> Path:
    """Where `policy=noop suite=SUITE output_root=ROOT` (keep and seed left at their defaults) writes."""
    return root / "noop" / suite / "none-keep1.0" / "seed7"


def episode_records(run_dir: Path) -> list[dict]:
    """A run directory's episode records as written, task file by task file."""
    return [json.loads(line) for path in sorted((run_dir / "episodes").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def run_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@contextmanager
def paused(process: subprocess.Popen):
    """Hold a run still (SIGSTOP: its locks stay held) while a second command starts: otherwise a run of a few
    short episodes can finish, and free its tasks, before the second command has even imported torch."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def cli_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "evaluate", *overrides]


def run_cli(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real Hydra CLI in a subprocess, as a user would."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run(cli_command(*overrides), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def require_fixtures() -> Path:
    """../shared/fixtures, the oracle: CI always has it, so there its absence fails loudly; in a user's own
    clone without it the test skips, saying why."""
    if not FIXTURES.is_dir():
        message = f"shared fixtures not found at {FIXTURES} (they live beside the project checkout)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    return FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return require_fixtures()
