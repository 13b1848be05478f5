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


def test_a_perturbed_expert_still_solves_and_its_demonstration_keeps_the_clean_actions():
    """DART demonstrations (policy.action_noise): the env executes the expert's moving actions plus noise, the recorded
    demonstration labels each step with the expert's own action, and grasps and releases are never perturbed."""
    import numpy as np

    from evaluate.demos import DemoRecorder
    from evaluate.envs.base import PRIMARY, WRIST
    from evaluate.envs.libero import TaskEnv, load_suite
    from evaluate.rollout import run_episode

    class Watched(ScriptedExpert):  # what the env executed and what the demonstration was given, step by step
        def act(self, obs):
            out = super().act(obs)
            seen.append((out.actions[0], out.actions[0] if out.labels is None else out.labels[0], self.moving))
            return out

    seen = []
    task = load_suite("libero_object")[0]
    recorder = DemoRecorder(None)
    with TaskEnv(task, (PRIMARY, WRIST), placement_seed=900) as env:
        ctx = EpisodeContext("libero_object", 0, task.instruction, 0, seed=7, placement_seed=900)
        record = run_episode(env, Watched(action_noise=0.3), ctx, 300, demos=recorder)
    assert record.success, f"not solved in {record.steps} steps"
    executed, labels, moving = (np.array(column) for column in zip(*seen))
    np.testing.assert_array_equal(recorder.take()["actions"], labels)  # the demonstration holds the clean actions
    noise = (executed - labels)[moving]
    assert 0.15 < noise[:, :6].std() < 0.35 and not noise[:, 6].any()  # arm perturbed (clipped at +-1), gripper not
    np.testing.assert_array_equal(executed[~moving], labels[~moving])  # holds (grasp, release) as the expert acts
    assert (~moving).sum() >= 12 and np.abs(executed).max() <= 1
