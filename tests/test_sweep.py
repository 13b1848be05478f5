"""The sweep script's Hydra multiruns: the paper's grid with the dense baseline once per model and suite,
task sharding, and a real 2-job sweep through the submitit local launcher."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from evaluate.analysis.report import load_runs
from tests.conftest import REPO, noop_run_dir

SWEEP = [sys.executable, str(REPO / "scripts" / "sweep.py")]


def dry_run(*args: str) -> list[list[str]]:
    """The Hydra overrides of each multirun the sweep would launch."""
    result = subprocess.run([*SWEEP, "--dry-run", *args], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert all(c[:4] == ["python", "-m", "evaluate", "-m"] for c in commands)
    return [c[4:] for c in commands]


def jobs(overrides: list[str]) -> list[dict[str, str]]:
    """The jobs Hydra's sweeper expands a multirun's overrides into."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    [batch] = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [dict(o.split("=", 1) for o in job) for job in batch]


def test_paper_grid_has_the_dense_baseline_once_per_model_and_suite():
    multiruns = dry_run()
    assert len(multiruns) == 4  # (dense, pruned) x (openvla, openvla_oft)
    all_jobs = [j for m in multiruns for j in jobs(m)]
    dense = [j for j in all_jobs if j["pruner"] == "none"]
    assert len(dense) == 2 * 4 and all(j["keep"] == "1.0" for j in dense)
    pruned = [j for j in all_jobs if j["pruner"] != "none"]
    assert len(pruned) == 2 * 4 * 5 * 3  # models x suites x pruners x retentions
    assert {(j["pruner"], j["keep"]) for j in pruned} == {
        (p, k) for p in ("fastv", "sparsevlm", "divprune", "vla_cache", "vla") for k in ("0.5", "0.25", "0.125")}
    assert len({tuple(sorted(j.items())) for j in all_jobs}) == len(all_jobs)


def test_task_shards_slurm_launcher_and_passthrough_overrides(fixtures_dir):
    # a dry run checks every point as the real sweep does: the checkpoint must be there, with statistics to use
    passed = [f"model.checkpoint={fixtures_dir / 'openvla_tiny_hf'}", "model.unnorm_key=libero_spatial",
              "hydra.launcher.partition=gpu"]
    multiruns = dry_run("--models", "openvla", "--suites", "libero_spatial", "libero_90", "--pruners", "vla",
                        "--keeps", "0.25", "--seeds", "7", "8", "--shard-tasks", "--launcher", "slurm", "--", *passed)
    assert len(multiruns) == 4  # libero_90 (90 tasks) and libero_spatial (10) cannot share a task list
    spatial = [j for m in multiruns for j in jobs(m) if j["suite"] == "libero_spatial"]
    assert len(spatial) == 2 * 2 * 10  # (dense, vla) x seeds x tasks
    assert {j["tasks"] for j in spatial} == {f"[{t}]" for t in range(10)}
    # every shard declares all ten tasks, so the directory is complete only when every shard is
    assert {j["expected_tasks"] for j in spatial} == {"[0,1,2,3,4,5,6,7,8,9]"}
    assert sum(j["suite"] == "libero_90" for m in multiruns for j in jobs(m)) == 2 * 2 * 90
    for overrides in multiruns:
        assert "hydra/launcher=slurm" in overrides
        assert overrides[-3:] == passed


def test_launcher_configs_compose_onto_the_submitit_schemas():
    from hydra import compose, initialize_config_dir

    from evaluate.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        slurm = compose(config_name="config", overrides=["policy=noop", "hydra/launcher=slurm"],
                        return_hydra_config=True).hydra.launcher
        local = compose(config_name="config", overrides=["policy=noop", "hydra/launcher=local"],
                        return_hydra_config=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1 and slurm.array_parallelism > 0
    assert local._target_.endswith("LocalLauncher")


@pytest.mark.sim
def test_two_task_shards_run_through_the_submitit_local_launcher_into_one_run_dir(tmp_path):
    """Two jobs (tasks [0] and [1] of one suite), run as separate processes by submitit's local executor,
    each a real 2-step LIBERO episode, writing to the same run directory; the report pools them."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run(
        [*SWEEP, "--models", "openvla_tiny", "--suites", "libero_spatial", "--pruners", "--launcher", "local",
         "--", "policy=noop", "suite.max_steps=2", "tasks=[0],[1]", "episodes_per_task=1", f"output_root={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list(tmp_path.glob(".submitit/*/*_result.pkl"))) == 2  # two submitit jobs
    run_dir = noop_run_dir(tmp_path, "libero_spatial")
    assert sorted(p.name for p in (run_dir / "episodes").iterdir()) == ["task00.jsonl", "task01.jsonl"]
    rs = load_runs([tmp_path])
    assert len(rs.runs) == 1 and sorted(rs.episodes.task_id) == [0, 1]
    assert set(rs.episodes.status) == {"ok"}
