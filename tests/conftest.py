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


# Commands run one after another in one interpreter, each as `python <command>` runs it: `-m module` by runpy as
# __main__ with sys.path[0] the working directory, a script file by runpy with sys.path[0] its folder; sys.argv as
# that command line gives it; file descriptors 1 and 2 (Python's and C libraries' output alike) into files of its
# own; the exit status and the message of a SystemExit, or an uncaught exception's traceback, as the interpreter
# gives them. The environment is restored and Hydra's global state cleared after each. A command that is not done
# within its own alarm is cut off (returncode None).
_ONE_INTERPRETER = """
import json, os, runpy, signal, sys, tempfile, traceback

class CutOff(BaseException):
    pass

def alarm(signum, frame):
    raise CutOff()

signal.signal(signal.SIGALRM, alarm)
commands, timeout, results_path = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
saved, environ, results = {fd: os.dup(fd) for fd in (1, 2)}, dict(os.environ), []
for command in commands:
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    for fd, f in files.items():
        os.dup2(f.fileno(), fd)
    status = 0
    signal.alarm(timeout)
    try:
        if command[0] == "-m":
            sys.argv, sys.path[0] = list(command[1:]), os.getcwd()
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv, sys.path[0] = list(command), os.path.dirname(os.path.abspath(command[0]))
            runpy.run_path(command[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            status = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except CutOff:
        status = None
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        signal.alarm(0)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
        os.environ.clear()
        os.environ.update(environ)
        if "hydra.core.global_hydra" in sys.modules:
            sys.modules["hydra.core.global_hydra"].GlobalHydra.instance().clear()
    out, err = ((f.seek(0), f.read().decode(errors="replace"))[1] for f in files.values())
    results.append({"returncode": status, "stdout": out, "stderr": err})
with open(results_path, "w") as f:
    json.dump(results, f)
"""


def run_in_one_interpreter(commands: list[list[str]], tmp_path: Path, timeout_each: int = 60,
                           env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Each command's result as `python <command>` (cwd the repository, MUJOCO_GL as run_cli sets it, `env` added)
    would give it, in one interpreter start-up for all (_ONE_INTERPRETER); returncode None: cut off after
    timeout_each seconds."""
    results = tmp_path / "one_interpreter.json"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), **(env or {})}
    driver = subprocess.run([sys.executable, "-c", _ONE_INTERPRETER, json.dumps(commands), str(timeout_each),
                             str(results)], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout_each * len(commands) + 120)
    assert driver.returncode == 0 and results.exists(), driver.stderr[-3000:]
    return [subprocess.CompletedProcess(command, r["returncode"], r["stdout"], r["stderr"])
            for command, r in zip(commands, json.loads(results.read_text()))]


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
