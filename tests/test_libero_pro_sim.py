"""LIBERO-PRO in the real simulator (issue 30): every registered PRO suite's first task builds and resets (one env
and one episode start each, no camera rendered: the cheapest check that the package can run it), and a run
through the CLI records the instruction the perturbed scene states."""
import numpy as np
import pytest
import torch

from evaluate.envs.libero import TaskEnv
from evaluate.envs.libero_pro import load_suite
from evaluate.envs.suites import SUITES
from tests.conftest import episode_records, run_cli, run_summary

pytestmark = pytest.mark.sim

PRO = [s.name for s in SUITES if s.benchmark == "libero_pro"]


@pytest.mark.parametrize("name", PRO)
def test_first_task_builds_and_resets(name):
    task = load_suite(name)[0]
    with TaskEnv(task, cameras=()) as env:  # the episode start a run makes: reset, init state 0, the wait steps
        obs = env.start_episode(0)
        assert env.live.language_instruction == task.scene_instruction  # what the scene states, parsed as the env does
        state = env.live.get_sim_state()
    assert obs.instruction == task.instruction and obs.state.shape == (8,) and np.isfinite(obs.state).all()
    assert state.shape == task.init_states[0].shape  # the init-state file is of this scene's model


def test_a_run_records_the_perturbed_instruction(tmp_path):
    result = run_cli("suite=libero_object_lan", "policy=scripted", "tasks=[0]", "episodes_per_task=1",
                     f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "scripted" / "libero_object_lan" / "none-keep1.0" / "seed7"
    (record,) = episode_records(run_dir)
    assert record["task"] == "grab alphabet soup and put it into basket"  # not "pick up the alphabet soup ..."
    assert record["status"] == "ok"
    summary = run_summary(run_dir)
    assert (summary["suite"], summary["model_suite"]) == ("libero_object_lan", "libero_object")
    assert "grab alphabet soup" in (run_dir / "per_task.csv").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_bare_command_on_a_cpu_machine_says_which_model_it_runs(tmp_path):
    result = run_cli("suite=libero_long", "pruner=vla", "keep=0.125", "tasks=[0]", "episodes_per_task=1",
                     "suite.max_steps=1", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("model: openvla_oft_tiny (no CUDA GPU here, and the CPU default "
                                                    "openvla_oft_small was trained on libero_object only")
    run_dir = tmp_path / "openvla_oft_tiny" / "libero_10" / "vla-keep0.125" / "seed7"
    assert run_summary(run_dir)["model_choice"] == "cpu_fallback"
    assert "model_choice: cpu_fallback" in (run_dir / "config.yaml").read_text()
