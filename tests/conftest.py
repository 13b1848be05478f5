import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def cli_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "evaluate", *overrides]


def run_cli(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real Hydra CLI in a subprocess, as a user would."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run(cli_command(*overrides), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (they live beside the project checkout)")
    return FIXTURES
