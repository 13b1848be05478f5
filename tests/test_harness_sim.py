"""End-to-end harness runs on the real LIBERO simulator, through the real Hydra CLI."""
import signal
import subprocess
import time

import imageio.v3 as iio
import numpy as np
import pytest

from evaluate.envs.libero import TaskEnv, load_suite
from evaluate.policy import EpisodeContext, PolicyOutput
from evaluate.rollout import run_episode
from tests.conftest import REPO, cli_command, episode_records, noop_run_dir, run_cli, run_summary

pytestmark = pytest.mark.sim


# suite option -> the suite's name (libero_long is LIBERO-10)
SUITES = {"libero_spatial": "libero_spatial", "libero_object": "libero_object", "libero_goal": "libero_goal",
          "libero_long": "libero_10", "libero_90": "libero_90"}


def test_one_short_episode_per_suite(tmp_path):
    """Each suite's episode through the CLI, the five as one multirun: one interpreter's start-up (torch, Hydra,
    the harness) rather than five, each suite's run still composed, checked and run on its own simulator."""
    result = run_cli("-m", "policy=noop", f"suite={','.join(SUITES)}", "tasks=[1]", "episodes_per_task=1",
                     "suite.max_steps=3", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in SUITES.values():
        run_dir = noop_run_dir(tmp_path, name)
        [record] = episode_records(run_dir)
        instruction = load_suite(name)[1].instruction
        assert record["suite"] == name and record["task_id"] == 1 and record["init_index"] == 0
        assert record["task"] == instruction and record["status"] == "ok"
        assert record["steps"] == 3 and record["success"] is False and len(record["queries"]) == 3
        summary = run_summary(run_dir)
        assert summary["complete"] and summary["episodes"] == 1 and summary["success_rate"] == 0.0
        assert summary["simulator"]["mujoco"] == "2.3.7" and summary["simulator"]["MUJOCO_GL"]
        assert instruction in (run_dir / "per_task.md").read_text()


# Ctrl-C; SLURM's time limit, preemption or scancel; SLURM's KillWait or the OOM killer
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_resumes_where_it_stopped(signum, tmp_path):
    """Stopped by each signal, a run keeps its finished episodes and the same command runs only the rest. A third
    run of the completed run (nothing runs twice) is made after SIGKILL only: the resumed run has then left the
    same complete run directory whichever signal stopped the first, and SIGKILL's first run is the one that
    leaves the least finished behind (no handler ran, no closing summary written)."""
    overrides = ["policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=3", "suite.max_steps=5",
                 f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    episodes = run_dir / "episodes" / "task00.jsonl"
    proc = subprocess.Popen(cli_command(*overrides), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    # the first episode's record, then its summary (rewritten after every episode): a SIGKILL between the two writes
    # leaves a summary one episode behind, which nothing can update
    while not (episodes.exists() and episodes.read_text().count("\n") >= 1 and _summarized(run_dir) >= 1):
        assert proc.poll() is None and time.time() < deadline, "run ended before its first episode"
        time.sleep(0.2)
    proc.send_signal(signum)  # in the middle of the second episode
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    if signum != signal.SIGKILL:  # the others stop cleanly and say so
        assert stderr.strip().splitlines()[-1].startswith(f"error: stopped by {signal.Signals(signum).name}")
    first = episode_records(run_dir)
    assert 1 <= len(first) < 3, "the signal should land before the run finishes"
    summary = run_summary(run_dir)
    assert summary["complete"] is False
    assert (summary["episodes_wanted"], summary["episodes_done"], summary["episodes"]) == (3, len(first), len(first))

    result = run_cli(*overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(first)} already done, {3 - len(first)} to run" in result.stdout  # Hydra logs to stdout
    records = episode_records(run_dir)
    assert records[: len(first)] == first
    assert sorted(r["init_index"] for r in records) == [0, 1, 2]
    assert run_summary(run_dir)["complete"] is True

    if signum == signal.SIGKILL:
        again = run_cli(*overrides)  # nothing left: no episode runs twice
        assert "3 already done, 0 to run" in again.stdout and len(episode_records(run_dir)) == 3


def _summarized(run_dir) -> int:
    """Episodes the run's summary.json counts so far (0 before it exists or while it is being replaced)."""
    try:
        return run_summary(run_dir)["episodes_done"]
    except (OSError, ValueError, KeyError):
        return 0


def test_changed_settings_do_not_mix_into_a_run_dir(tmp_path):
    common = ["policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=1", f"output_root={tmp_path}",
              "output_dir=" + str(tmp_path / "one")]
    assert run_cli(*common, "suite.max_steps=2").returncode == 0
    result = run_cli(*common, "suite.max_steps=4")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "suite" in result.stderr


def test_video_has_one_frame_per_step(tmp_path):
    result = run_cli("policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=1", "suite.max_steps=6",
                     "video=true", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    [record] = episode_records(run_dir)
    frames = iio.imread(run_dir / "videos" / record["video"])
    assert record["video"] == "task00_init00_failure.mp4"
    assert frames.shape == (7, 256, 256, 3)  # the first observation + one per step


class _WrongShapePolicy:
    """Sends a 3-dim action: the simulator rejects it, which must end the episode as a recorded failure."""

    name = "wrong_shape"

    def reset(self, ctx):
        pass

    def act(self, obs):
        return PolicyOutput(actions=np.zeros((1, 3)))

    def describe(self):
        return {}


def test_simulator_error_is_a_recorded_failure():
    task = load_suite("libero_object")[0]
    with TaskEnv(task) as env:
        ctx = EpisodeContext("libero_object", 0, task.instruction, 0, seed=7)
        record = run_episode(env, _WrongShapePolicy(), ctx, max_steps=5)
    assert record.status == "env_error" and not record.success and record.steps == 0
    assert record.error
