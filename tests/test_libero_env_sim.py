"""A new TaskEnv skips robosuite's model recompile at its first reset (evaluate/envs/libero.py): that episode
must be the one a hard reset gives, every image and state bit for bit."""
import numpy as np
import pytest

from evaluate.envs.base import PRIMARY, WRIST
from evaluate.envs.libero import TaskEnv, load_suite

pytestmark = pytest.mark.sim


def _episode(env: TaskEnv, init_index: int, actions: np.ndarray) -> list:
    observations = [env.start_episode(init_index)]
    observations += [env.step(action)[0] for action in actions]
    return observations


def _same(a, b) -> bool:
    return (np.array_equal(a.state, b.state) and a.images.keys() == b.images.keys() and a.raw.keys() == b.raw.keys()
            and all(np.array_equal(a.images[k], b.images[k]) for k in a.images)
            and all(np.array_equal(np.asarray(a.raw[k]), np.asarray(b.raw[k])) for k in a.raw))


def test_the_first_episode_of_a_new_env_equals_one_after_a_hard_reset():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 7))
    with TaskEnv(load_suite("libero_object")[0], (PRIMARY, WRIST)) as env:
        first = _episode(env, 0, actions)  # no recompile
        _episode(env, 1, actions[:3])  # another episode in between, as a run has
        again = _episode(env, 0, actions)  # hard reset: the model rebuilt and recompiled
    assert len(first) == len(again) == 21
    assert all(_same(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0].images[PRIMARY], first[-1].images[PRIMARY])  # the actions moved the robot
