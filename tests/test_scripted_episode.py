"""One real LIBERO episode, run as the official protocol runs it, that the scripted expert solves."""
import os

import pytest

from evaluate.envs.libero import observation
from evaluate.policies.scripted import ScriptedExpert
from evaluate.policy import EpisodeContext

pytestmark = pytest.mark.sim


def test_scripted_expert_solves_a_libero_spatial_episode():
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs.env_wrapper import ControlEnv

    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = suite.get_task(0)
    # cameras off: rendering does not change the physics, and the expert never looks at images
    env = ControlEnv(bddl_file_name=os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file),
                     use_camera_obs=False, has_offscreen_renderer=False)
    try:
        env.seed(0)
        env.reset()
        obs = env.set_init_state(suite.get_task_init_states(0)[0])
        for _ in range(10):
            obs, _, _, _ = env.step([0, 0, 0, 0, 0, 0, -1])
        policy = ScriptedExpert()
        policy.reset(EpisodeContext("libero_spatial", 0, task.language, 0, seed=0, env=env))
        done = False
        for _ in range(220):
            obs, _, done, _ = env.step(policy.act(observation(obs, task.language)).actions[0])
            if done:
                break
        assert done, f"not solved; last phase {policy.phase}"
    finally:
        env.close()
