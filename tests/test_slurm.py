"""Sweeps on a real SLURM scheduler (a single-node cluster started by scripts/slurm_local.sh): job arrays of
task shards, a job past its time limit, `scancel` of one array task, a job that fails; each stopped run keeps
its finished episodes and re-running the same sweep completes it. The cluster has no accounting (sacct
disabled), as some real ones; noop policy or the tiny model, 3-step episodes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import REPO, episode_records, noop_run_dir, require_fixtures, run_summary
from tests.slurm_cluster import Cluster, skip_or_fail, start, stop, why_no_cluster

pytestmark = [pytest.mark.sim, pytest.mark.slurm]
LAUNCHER = ["hydra.launcher.partition=local", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2"]
NOOP = ["policy=noop", "suite=libero_object", "suite.max_steps=3"]
SWEEP_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def cluster():
    reason = why_no_cluster()
    if reason:
        skip_or_fail(reason)
    directory = Path(tempfile.mkdtemp(prefix="vla-pruner-slurm-"))
    try:
        yield start(directory)
    finally:
        stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def slurm(cluster: Cluster):
    """The cluster with no job left over from another test, before and after."""
    cluster.wait_idle()
    yield cluster
    cluster.run("scancel", "--user=root")
    cluster.wait_idle()


def evaluate_sweep(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "evaluate", "-m", *overrides, "hydra/launcher=slurm", *LAUNCHER]


def run(slurm: Cluster, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=slurm.env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)


def failed_points(result: subprocess.CompletedProcess) -> list[str]:
    """The lines of the sweep's closing `error: N sweep point(s) failed` report, one per point."""
    lines = result.stderr.strip().splitlines()
    at = next((i for i, line in enumerate(lines) if "sweep point(s) failed" in line), None)
    assert at is not None, result.stdout[-3000:] + result.stderr[-3000:]
    assert lines[at].startswith("error: ")
    return lines[at + 1:]


def submitted_jobs(root: Path) -> list[str]:
    """The SLURM ids (JOB, or ARRAYJOB_TASK in an array) of the jobs submitit ran for sweeps under `root`."""
    return sorted(p.name for p in (root / ".submitit").iterdir() if (p / f"{p.name}_submitted.pkl").exists())


def keys(records: list[dict]) -> list[tuple[int, int]]:
    return sorted((r["task_id"], r["init_index"]) for r in records)


def test_task_shards_of_a_small_grid_run_as_job_arrays_into_shared_run_dirs(slurm, tmp_path):
    """scripts/sweep.py --shard-tasks: the dense and the pruned multirun go to the cluster together, each a job
    array with one task per shard; the shards of one experiment fill one run directory; the report reads them."""
    from evaluate.analysis.report import suite_table
    from evaluate.analysis.runset import load_runs

    # two of the ten shards --shard-tasks makes (the later override wins), to keep the test short
    shards = ["tasks=[0],[1]", "expected_tasks=[0,1]"]
    result = run(slurm, [sys.executable, str(REPO / "scripts" / "sweep.py"), "--models", "openvla_tiny",
                         "--suites", "libero_object", "--pruners", "random", "--keeps", "0.5", "--shard-tasks",
                         "--launcher", "slurm", "--", *LAUNCHER, *shards, "episodes_per_task=1", "suite.max_steps=3",
                         f"output_root={tmp_path}"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    tasks = submitted_jobs(tmp_path)
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 2  # two arrays of two tasks
    states = slurm.final_states()
    assert {states[t] for t in tasks} == {"COMPLETED"}
    # submitit's state polls fall back to squeue with one line per multirun, not sacct's error at every poll
    assert output.count("sacct is unavailable") == 2 and "Bypassing sacct" not in output
    assert output.count("accounting storage is disabled") == 2
    for pruned in ("none-keep1.0", "random-keep0.5"):
        run_dir = tmp_path / "openvla_tiny" / "libero_object" / pruned / "seed7"
        summary = run_summary(run_dir)
        assert (summary["complete"], summary["episodes_done"], summary["episodes_wanted"]) == (True, 2, 2)
        assert sorted(p.name for p in (run_dir / "episodes").iterdir()) == ["task00.jsonl", "task01.jsonl"]
        assert keys(episode_records(run_dir)) == [(0, 0), (1, 0)]  # one record per episode, none twice
    rs = load_runs([tmp_path])
    assert len(rs.runs) == 2 and set(rs.runs.run_status) == {"complete"}
    table = suite_table(rs).set_index("pruner")
    assert sorted(table.index) == ["none", "random"]
    assert list(table.completeness) == ["2/2", "2/2"] and list(table.episodes) == [2, 2]
    dense, pruned = table.loc["none"], table.loc["random"]
    assert pruned.kept_visual_mean == pytest.approx(dense.kept_visual_mean / 2)
    assert pruned.prefill_tmacs_mean < dense.prefill_tmacs_mean
    assert pruned.dense_sr == dense.sr


def test_a_job_with_two_simulator_workers_answers_them_from_one_model(slurm, tmp_path):
    """num_envs=2 inside a SLURM job given 2 CPUs: two spawned simulator workers, the tiny OpenVLA loaded once
    in the job's main process, every episode recorded once, per-query batch sizes and the throughput recorded."""
    launcher = [o if not o.startswith("hydra.launcher.cpus_per_task=") else "hydra.launcher.cpus_per_task=2"
                for o in LAUNCHER]
    point = ["policy=vla", "model=openvla_tiny", "pruner=vla", "keep=0.25", "suite=libero_object", "tasks=[0]",
             "episodes_per_task=3", "suite.max_steps=6", "num_envs=2", f"output_root={tmp_path}"]
    result = run(slurm, [sys.executable, "-m", "evaluate", "-m", *point, "hydra/launcher=slurm", *launcher])
    assert result.returncode == 0, result.stderr[-3000:]
    [job] = submitted_jobs(tmp_path)
    assert slurm.final_states()[job] == "COMPLETED"
    run_dir = tmp_path / "openvla_tiny" / "libero_object" / "vla-keep0.25" / "seed7"
    records = episode_records(run_dir)
    assert keys(records) == [(0, 0), (0, 1), (0, 2)] and {r["status"] for r in records} == {"ok"}
    sizes = {q["batch_size"] for r in records for q in r["queries"]}
    assert sizes <= {1, 2} and all(len(r["queries"]) == 6 for r in records)
    summary = run_summary(run_dir)
    assert summary["complete"] is True and summary["throughput"]["episodes_per_hour"] > 0


def test_a_job_past_its_time_limit_keeps_its_episodes_and_the_same_sweep_completes_it(slurm, tmp_path):
    """SLURM ends the job at its limit (SIGTERM, SIGKILL KillWait later): the run stops between simulator steps
    and writes its summary; submitit does not requeue it (max_num_timeout: 0); re-running resumes."""
    # 20 episodes of 400 noop steps: 2-3 minutes of work (no camera is rendered for noop), past the limit (SLURM
    # enforces it within 30 s after the minute: 20 x 200 steps once finished inside that)
    point = ["policy=noop", "suite=libero_object", "suite.max_steps=400", "tasks=[0]", "episodes_per_task=20",
             f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    # signal_delay_s=0: no early warning, SLURM's own SIGTERM at the limit (1 min, checked every 30 s)
    first = run(slurm, evaluate_sweep(*point, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=0"))
    assert first.returncode != 0
    [point_line] = failed_points(first)
    assert point_line.startswith("  point 0 (") and "stopped by SIGTERM before the run finished" in point_line
    [job] = submitted_jobs(tmp_path)
    assert slurm.final_states()[job] == "TIMEOUT"
    assert "DUE TO TIME LIMIT" in (tmp_path / ".submitit" / job / f"{job}_0_log.err").read_text()
    kept = episode_records(run_dir)
    summary = run_summary(run_dir)
    assert 0 < len(kept) < 20 and {r["status"] for r in kept} == {"ok"}  # the signal ended no episode as an error
    assert (summary["complete"], summary["episodes_wanted"], summary["episodes_done"]) == (False, 20, len(kept))
    assert summary["episodes"] == len(kept)

    # the same sweep, given time: it runs only what is missing
    again = run(slurm, evaluate_sweep(*point, "hydra.launcher.timeout_min=10"))
    assert again.returncode == 0, again.stderr[-3000:]
    records = episode_records(run_dir)
    assert keys(records) == [(0, i) for i in range(20)]
    assert records[:len(kept)] == kept
    assert run_summary(run_dir)["complete"] is True


def stop_task_1_mid_episode(slurm: Cluster, point: list[str], run_dir: Path, stop: Callable[[str], None]):
    """Runs the sweep of `point` (tasks [0] and [1]) and, once task 1 has finished an episode (its next one has
    begun), calls `stop(its job id)`; returns the finished sweep and that job's id."""
    shard1 = run_dir / "episodes" / "task01.jsonl"
    sweep = subprocess.Popen(evaluate_sweep(*point), cwd=REPO, env=slurm.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + SWEEP_TIMEOUT_S
    while not (shard1.exists() and shard1.read_text().count("\n") >= 1):
        assert sweep.poll() is None and time.time() < deadline, sweep.communicate()[1][-3000:]
        time.sleep(0.2)
    job = next(j for j, state in slurm.jobs().items() if j.endswith("_1") and state == "RUNNING")
    stop(job)
    stdout, stderr = sweep.communicate(timeout=SWEEP_TIMEOUT_S)
    return subprocess.CompletedProcess(sweep.args, sweep.returncode, stdout, stderr), job


def test_scancel_of_one_array_task_mid_episode_stops_only_that_task(slurm, tmp_path):
    """scancel: SIGTERM, the run stops between simulator steps and writes its summary; the other task goes on."""
    point = [*NOOP, "tasks=[0],[1]", "expected_tasks=[0,1]", "episodes_per_task=2", f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    first, job = stop_task_1_mid_episode(slurm, point, run_dir, lambda job: slurm.run("scancel", job))
    assert first.returncode != 0
    [point_line] = failed_points(first)
    assert point_line.startswith("  point 1 (") and "tasks=[1]" in point_line
    assert "stopped by SIGTERM before the run finished" in point_line
    states = slurm.final_states()
    assert states[job] == "CANCELLED" and states[job.replace("_1", "_0")] == "COMPLETED"
    kept = episode_records(run_dir)
    # the other task ran all of its own; the cancelled one kept its first, its second left nothing behind
    assert keys(kept) == [(0, 0), (0, 1), (1, 0)] and {r["status"] for r in kept} == {"ok"}
    summary = run_summary(run_dir)
    assert (summary["complete"], summary["episodes_wanted"], summary["episodes_done"]) == (False, 4, 3)

    again = run(slurm, evaluate_sweep(*point))
    assert again.returncode == 0, again.stderr[-3000:]
    records = episode_records(run_dir)
    assert keys(records) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r for r in records if r in kept] == kept  # the finished ones kept as they were, none run twice
    assert run_summary(run_dir)["complete"] is True


def test_a_job_killed_outright_is_one_failed_point_and_the_sweep_waits_for_the_others(slurm, tmp_path):
    """SIGKILL (as the OOM killer, a lost node, or KillWait running out): no result for submitit, which raised
    in the launching process and ended the sweep; now the point is reported and the other job finishes."""
    point = [*NOOP, "tasks=[0],[1]", "expected_tasks=[0,1]", "episodes_per_task=2", f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")

    def kill(job: str) -> None:  # the run's process, named in its task lock (scancel --signal=KILL cancels)
        pid = int((run_dir / "locks" / "task01.lock").read_text().split()[1])
        os.kill(pid, signal.SIGKILL)

    result, job = stop_task_1_mid_episode(slurm, point, run_dir, kill)
    assert result.returncode != 0
    [point_line] = failed_points(result)
    assert point_line.startswith("  point 1 (") and "tasks=[1]" in point_line, point_line
    assert f"job {job} ended without its result (SLURM state " in point_line and "Traceback" not in result.stderr
    assert keys(episode_records(run_dir)) == [(0, 0), (0, 1), (1, 0)]  # the killed episode left nothing behind


def test_a_job_that_fails_at_load_is_reported_and_the_others_finish(slurm, tmp_path):
    """Weights re-saved without one tensor pass the checks before submission but fail when the job loads them."""
    from safetensors.torch import load_file, save_file

    bad_ckpt = tmp_path / "ckpt"
    shutil.copytree(require_fixtures() / "openvla_tiny_hf", bad_ckpt)
    weights = load_file(bad_ckpt / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, bad_ckpt / "model.safetensors", metadata={"format": "pt"})
    good_ckpt = require_fixtures() / "openvla_tiny_hf"
    result = run(slurm, evaluate_sweep(f"model.checkpoint={bad_ckpt},{good_ckpt}", "model=openvla_tiny",
                                       "model.build_seed=null",  # the fixture, as it is
                                       "suite=libero_object", "suite.max_steps=3", "tasks=[0]",
                                       "episodes_per_task=1", f"output_root={tmp_path / 'runs'}"))
    assert result.returncode != 0
    [point_line] = failed_points(result)
    assert point_line.startswith("  point 0 (model.checkpoint=") and "mismatched weights" in point_line, result.stderr
    assert "Traceback" not in result.stderr
    states = slurm.final_states()
    assert {states[t] for t in submitted_jobs(tmp_path / "runs")} == {"COMPLETED"}  # both jobs ended normally
    summaries = [run_summary(p.parent) for p in (tmp_path / "runs").rglob("summary.json")]
    assert [s["complete"] for s in summaries if s.get("complete")] == [True], summaries  # the good point finished
