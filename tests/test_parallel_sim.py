"""num_envs > 1 through the real CLI and simulator: the same episodes as one process, resume, locks and task
shards as before, a worker that dies or hangs costs its episode one env_error, Ctrl-C leaves no worker behind."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_command, episode_records, noop_run_dir, paused, run_cli, run_summary

pytestmark = pytest.mark.sim
NOOP = ["policy=noop", "suite=libero_object", "suite.max_steps=3"]


def _outcomes(run_dir: Path) -> dict:
    return {(r["task_id"], r["init_index"]): (r["status"], r["success"], r["steps"]) for r in episode_records(run_dir)}


def _workers_of(pid: int) -> list[int]:
    """The simulator worker processes a run started (its children, except multiprocessing's helpers)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "multiprocessing.spawn" in line]


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def test_the_scripted_expert_gives_the_same_episodes_on_two_workers(tmp_path):
    """The scripted expert is deterministic: one process and two workers give the same success and steps."""
    common = ["policy=scripted", "suite=libero_spatial", "tasks=[0]", "episodes_per_task=3", "suite.max_steps=220"]
    one = run_cli(*common, f"output_root={tmp_path / 'one'}")
    two = run_cli(*common, "num_envs=2", f"output_root={tmp_path / 'two'}")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    run = Path("scripted") / "libero_spatial" / "none-keep1.0" / "seed7"
    outcomes = _outcomes(tmp_path / "one" / run)
    assert outcomes == _outcomes(tmp_path / "two" / run)
    assert len(outcomes) == 3 and any(success for _, success, _ in outcomes.values())


def test_resume_locks_and_task_shards_with_two_workers(tmp_path):
    run_dir = noop_run_dir(tmp_path, "libero_object")
    shard = [*NOOP, "num_envs=2", "expected_tasks=[0,1]", f"output_root={tmp_path}"]
    first = subprocess.Popen(cli_command(*shard, "tasks=[0]", "episodes_per_task=3"), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run_dir / "summary.json").exists(), first, "a summary")
    with paused(first):
        second = run_cli(*shard, "tasks=[0]", "episodes_per_task=3")  # the same task while the first holds it
    assert second.returncode != 0 and second.stderr.strip().splitlines()[-1].startswith("error: task 0 of ")
    assert first.wait(timeout=300) == 0, first.communicate()[1][-2000:]
    assert run_summary(run_dir)["complete"] is False  # task 1's shard has not run
    assert run_cli(*shard, "tasks=[1]", "episodes_per_task=3").returncode == 0
    assert run_summary(run_dir)["complete"] is True
    # extending the run: only the new episodes run, nothing is recorded twice
    result = run_cli(*shard, "tasks=[0,1]", "episodes_per_task=4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "8 episodes wanted, 6 already done, 2 to run" in result.stdout + result.stderr
    keys = [(r["task_id"], r["init_index"]) for r in episode_records(run_dir)]
    assert sorted(keys) == [(t, i) for t in (0, 1) for i in range(4)]


def test_a_worker_that_dies_and_one_that_hangs_each_cost_their_episode_one_env_error(tmp_path):
    """Both faults in one run (it was one run per fault): once an episode is recorded, one worker is SIGKILLed and
    the other SIGSTOPped, each mid-episode. Each is still detected on its own path and named in its own record: the
    dead one by its process sentinel ("died"), the silent one only by worker_timeout_s ("no sign of life for 30 s"),
    and each must be replaced for the run to finish its 4 episodes. A missed death or a missed hang leaves fewer
    than two env_errors, the wrong messages, or a run that never completes."""
    overrides = ["policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=4", "suite.max_steps=600",
                 "num_envs=2", "worker_timeout_s=30", f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    process = subprocess.Popen(cli_command(*overrides), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    _wait_for(lambda: _recorded(run_dir) >= 1, process, "a recorded episode")  # both workers have work now
    workers = _workers_of(process.pid)
    assert len(workers) == 2, workers
    dies, hangs = workers
    os.kill(dies, signal.SIGKILL)
    os.kill(hangs, signal.SIGSTOP)
    assert process.wait(timeout=600) == 0, process.communicate()[1][-2000:]
    records = episode_records(run_dir)
    errors = sorted(r["error"] for r in records if r["status"] == "env_error")
    assert len(records) == 4 and len(errors) == 2, records
    assert "worker died" in errors[0] and "no sign of life for 30 s" in errors[1], errors  # sorted: d < g
    assert run_summary(run_dir)["complete"] is True
    assert not _process_exists(dies) and not _process_exists(hangs)


def _recorded(run_dir: Path) -> int:
    return len(episode_records(run_dir)) if (run_dir / "episodes").exists() else 0


def _process_exists(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat")
    return state.exists() and state.read_text().split()[2] != "Z"


def test_a_signal_stops_the_workers_and_keeps_finished_episodes(tmp_path):
    """SIGTERM (SLURM's at a time limit, preemption or scancel) to the main process of a two-worker run. It was also
    run with SIGINT; both take the same path here: the main process handles the two alike (evaluate/interrupt.py's
    HANDLED) and the workers ignore both (evaluate/parallel.py), and the one-line stop message naming each signal
    is test_harness_sim's (test_interrupted_run_resumes_where_it_stopped[SIGINT] and [SIGTERM])."""
    signum = signal.SIGTERM
    overrides = ["policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=6", "suite.max_steps=60",
                 "num_envs=2", f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    process = subprocess.Popen(cli_command(*overrides), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    _wait_for(lambda: _recorded(run_dir) >= 1, process, "a recorded episode")
    workers = _workers_of(process.pid)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "Traceback" not in stderr, stderr[-2000:]
    records = episode_records(run_dir)
    assert 1 <= len(records) < 6 and all(r["status"] == "ok" for r in records)
    assert len({(r["task_id"], r["init_index"]) for r in records}) == len(records)
    assert workers and not any(_process_exists(pid) for pid in workers)
    resumed = run_cli(*overrides)  # the re-run does the rest
    assert resumed.returncode == 0 and run_summary(run_dir)["complete"] is True
