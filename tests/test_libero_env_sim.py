"""An episode is a function of its task and init state alone (evaluate/envs/libero.py): LIBERO places a scene's
fixtures from NumPy's global RNG at every reset, and a new TaskEnv skips robosuite's rebuild at its first reset.
Every image, state and raw observation must be the same bit for bit, whatever the env ran before."""
import numpy as np
import pytest

from evaluate.envs.base import PRIMARY, WRIST
from evaluate.envs.libero import TaskEnv, load_suite

pytestmark = pytest.mark.sim

FIXTURE = "wooden_cabinet_1_main"  # libero_goal task 3's cabinet: a fixture, placed at random at each reset


def _episode(env: TaskEnv, init_index: int, actions: np.ndarray) -> tuple[list, np.ndarray]:
    observations = [env.start_episode(init_index)]
    observations += [env.step(action)[0] for action in actions]
    model = env.live.sim.model
    return observations, model.body_pos[model.body_name2id(FIXTURE)].copy()


def _same(a, b) -> bool:
    return (np.array_equal(a.state, b.state) and a.images.keys() == b.images.keys() and a.raw.keys() == b.raw.keys()
            and all(np.array_equal(a.images[k], b.images[k]) for k in a.images)
            and all(np.array_equal(np.asarray(a.raw[k]), np.asarray(b.raw[k])) for k in a.raw))


def test_an_episode_is_the_same_on_a_new_env_and_after_other_episodes():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 7))
    task = load_suite("libero_goal")[3]
    with TaskEnv(task, (PRIMARY, WRIST)) as env:
        first, cabinet = _episode(env, 2, actions)  # a new env: no rebuild at its first reset
        _, cabinet_0 = _episode(env, 0, actions[:3])  # another episode in between, as a run has
        again, cabinet_again = _episode(env, 2, actions)  # hard reset: the model rebuilt and recompiled
    with TaskEnv(task, (PRIMARY, WRIST)) as other:
        _episode(other, 1, actions[:3])  # a different history, as a resumed run or another worker has
        elsewhere, cabinet_elsewhere = _episode(other, 2, actions)
    assert not np.array_equal(cabinet, cabinet_0)  # the fixture does move between episodes: the check can fail
    assert np.array_equal(cabinet, cabinet_again) and np.array_equal(cabinet, cabinet_elsewhere)
    assert len(first) == len(again) == len(elsewhere) == 21
    assert all(_same(a, b) and _same(a, c) for a, b, c in zip(first, again, elsewhere))
    assert not np.array_equal(first[0].images[PRIMARY], first[-1].images[PRIMARY])  # the actions moved the robot
