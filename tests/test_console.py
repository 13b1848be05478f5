"""A run's console shows the run, not the simulator: robosuite's and libero's chatter goes to the run's log file."""
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, run_cli

SIMULATOR_CHATTER = ("Applying task order", "No private macro file", "private macro file", "[robosuite")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_simulator_logs_go_to_the_log_file_not_the_console(tmp_path):
    """robosuite's logger (with its own console handler) and libero's prints, with a run log file open."""
    log_file = tmp_path / "run.log"
    result = run_python(f"""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # a console handler, as Hydra's
        logging.getLogger().addHandler(logging.FileHandler({str(log_file)!r}))
        from evaluate.envs.libero import load_suite
        import robosuite
        logging.getLogger("robosuite_logs").warning("robosuite probe")
        load_suite("libero_spatial")
        logging.getLogger("evaluate").info("the run's own line")
    """)
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    assert "robosuite probe" not in console and "Applying task order" not in console
    assert "the run's own line" in console
    logged = log_file.read_text()
    assert "robosuite probe" in logged and "Applying task order index 0" in logged


@pytest.mark.sim
def test_run_console_has_progress_and_no_simulator_chatter(tmp_path):
    result = run_cli("policy=noop", "suite=libero_spatial", "tasks=[0]", "episodes_per_task=1", "suite.max_steps=3",
                     f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    for chatter in SIMULATOR_CHATTER:
        assert chatter not in console, console
    assert "libero_spatial: 100%" in result.stderr and "1/1" in result.stderr and "success=" in result.stderr
    assert '"episodes": 1' in result.stdout  # the final summary
    (log_file,) = tmp_path.glob("**/*.log")  # Hydra's log of the run keeps what the console leaves out
    assert "Applying task order" in log_file.read_text()
