"""Demonstrations that are not the test (placement_seed): LIBERO's own sampler places the objects from seed
S + i, never at one of the 50 init states evaluation uses, the same whatever the env ran before; and a recorded
demo replays as exactly the observations the live env gave (what training and offline replay see)."""
import numpy as np
import pytest

from evaluate.demos import DemoRecorder, demo_index, demo_observations, read_demo, write_demo
from evaluate.envs.base import PRIMARY, WRIST
from evaluate.envs.libero import TaskEnv, load_suite
from evaluate.policy import EpisodeContext

pytestmark = pytest.mark.sim


def test_sampled_placements_are_not_init_states_and_demos_replay_the_live_observations(tmp_path):
    task = load_suite("libero_object")[0]
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, size=(3, 7))
    recorder = DemoRecorder(None)
    with TaskEnv(task, (PRIMARY, WRIST), placement_seed=900) as env:
        live = [env.start_episode(0)]
        nq = env.live.sim.model.nq
        start = env.live.sim.get_state().flatten()[1:1 + nq]
        ctx = EpisodeContext("libero_object", 0, task.instruction, 0, seed=7, placement_seed=900, env=env.live)
        recorder.start(ctx)
        for action in actions:
            recorder.add(live[-1], action)
            live.append(env.step(action)[0])
        recorder.finish(True)
        env.start_episode(1)  # another placement in between
        other = env.live.sim.get_state().flatten()[1:1 + nq]
        env.start_episode(0)
        again = env.live.sim.get_state().flatten()[1:1 + nq]
    assert not np.allclose(start, other)  # the seed does move the objects: the check below can fail
    np.testing.assert_array_equal(start, again)
    distances = [np.abs(start - state[1:1 + nq]).max() for state in task.init_states]
    assert len(distances) == 50 and min(distances) > 1e-3

    path = write_demo(tmp_path, recorder.take())
    [entry] = demo_index(path)
    demo = read_demo(entry)
    assert demo["start"] == "sampled" and demo["placement_seed"] == 900
    for replayed, seen in zip(demo_observations(demo), live[:-1], strict=True):
        assert np.array_equal(replayed.state, seen.state)
        assert all(np.array_equal(replayed.images[c], seen.images[c]) for c in (PRIMARY, WRIST))
        assert replayed.instruction == seen.instruction
