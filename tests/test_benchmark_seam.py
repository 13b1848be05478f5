"""The benchmark seam (issue 12): LIBERO's observations as the model-agnostic `Observation` with the official
preprocessing kept bit for bit, learned policies that read no LIBERO key, one suite table behind the configs,
the sweep and the tables, and a new benchmark added from a test module without editing a project file."""
from __future__ import annotations

import math
import re

import imageio.v3 as iio
import numpy as np
import pytest

from evaluate.analysis.labels import SUITE_COLUMNS
from evaluate.config import CONFIG_DIR, ConfigError, validate
from evaluate.envs import suites
from evaluate.envs.base import PRIMARY, WRIST, Observation, Benchmark, Task
from evaluate.envs.libero import observation
from evaluate.envs.suites import SUITES, Suite, suite_info
from evaluate.policies import POLICIES
from vla_pruner.models.preprocess import model_image
from tests.conftest import REPO, composed, episode_records
from evaluate.envs.libero_conventions import libero_image

QUARTER_TURN_Z = np.array([0.0, 0.0, math.sin(math.pi / 8), math.cos(math.pi / 8)])  # (x, y, z, w): pi/4 about z


def raw_libero_obs(seed: int, cameras: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    raw = {"robot0_eef_pos": np.array([-0.2, 0.1, 1.17]), "robot0_eef_quat": QUARTER_TURN_Z,
           "robot0_gripper_qpos": np.array([0.039, -0.039]), "akita_black_bowl_1_pos": np.zeros(3)}
    if cameras:
        raw["agentview_image"] = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        raw["robot0_eye_in_hand_image"] = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return raw


@pytest.mark.parametrize("seed", [0, 1])
def test_libero_observation_keeps_the_official_preprocessing_bit_for_bit(seed):
    raw = raw_libero_obs(seed)
    obs = observation(raw, "put the bowl on the plate")
    np.testing.assert_array_equal(obs.images[PRIMARY], raw["agentview_image"][::-1, ::-1])  # upright
    np.testing.assert_array_equal(obs.images[WRIST], raw["robot0_eye_in_hand_image"][::-1, ::-1])
    for role, key in ((PRIMARY, "agentview_image"), (WRIST, "robot0_eye_in_hand_image")):
        np.testing.assert_array_equal(model_image(obs.images[role]), libero_image(raw[key]))
    assert obs.instruction == "put the bowl on the plate" and obs.raw is raw


def test_libero_state_is_eef_position_axis_angle_and_gripper():
    obs = observation(raw_libero_obs(0, cameras=False), "x")
    np.testing.assert_allclose(obs.state, [-0.2, 0.1, 1.17, 0.0, 0.0, math.pi / 4, 0.039, -0.039], atol=1e-12)
    assert obs.images == {}  # cameras off (the scripted expert's test runs so): no image, the state still there


def test_learned_policies_and_the_rollout_read_no_libero_key():
    """Only the privileged expert and the LIBERO-format demo recorder may read the simulator's own keys (and the wire
    format of vla-eval's protocol, evaluate/serve/wire.py, names its LIBERO benchmark's camera keys)."""
    allowed = {"scripted.py", "libero.py", "libero_goals.py", "demos.py", "wire.py"}
    pattern = re.compile(r"agentview|eye_in_hand|robot0_|eef_quat")
    readers = [p.relative_to(REPO) for p in sorted((REPO / "evaluate").rglob("*.py"))
               if p.name not in allowed and pattern.search(p.read_text())]
    assert readers == []


def test_suite_table_and_config_group_agree():
    options = {p.stem for p in (CONFIG_DIR / "suite").glob("*.yaml")}
    assert options == {key for s in SUITES for key in (s.name, s.paper_option) if key}
    for option in options:
        assert composed(f"suite={option}").suite.name == suite_info(option).name
    libero = {"libero_spatial": "spatial", "libero_object": "object", "libero_goal": "goal", "libero_10": "long",
              "libero_long": "long", "libero_90": "libero_90"}
    assert list(SUITE_COLUMNS.items())[:6] == list(libero.items())  # the paper's columns first, then LIBERO-PRO's
    assert SUITE_COLUMNS["libero_10_lan"] == "long_lan" and SUITE_COLUMNS["libero_object_temp_x0.3"] == "object_x0.3"
    assert [s.option for s in SUITES if s.in_paper] == ["libero_spatial", "libero_object", "libero_goal",
                                                        "libero_long"]
    assert suite_info("libero_long").tasks == 10 and suite_info("libero_90").tasks == 90
    with pytest.raises(ConfigError, match="unknown suite 'libero_100'; valid choices: libero_spatial, "):
        suite_info("libero_100")


# ------------------------------------------------------------------------- a benchmark from a test module


class CountingEnv:
    """A benchmark without a simulator: the camera shows the step count, the episode succeeds at step 3."""

    live = None

    def __init__(self, task: Task, cameras=(PRIMARY,)):
        self.task, self.t = task, 0

    def _observe(self) -> Observation:
        return Observation(images={PRIMARY: np.full((16, 16, 3), 60 * self.t, dtype=np.uint8)}, state=np.zeros(2),
                           instruction=self.task.instruction)

    def start_episode(self, init_index: int) -> Observation:
        self.t = 0
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        self.t += 1
        return self._observe(), self.t == 3

    def close(self) -> None:
        pass


BENCHMARK = Benchmark(load_suite=lambda suite: [Task(suite, i, f"task{i}", f"count to three ({i})") for i in range(2)],
                     make_env=CountingEnv, versions=lambda: {"counting": "1.0"})


def test_a_new_suite_family_is_a_module_not_an_edit(tmp_path, monkeypatch):
    from evaluate.runner import run

    monkeypatch.setattr(suites, "SUITES", (*SUITES, Suite("counting", "counting", tasks=2, column="count")))
    monkeypatch.setitem(suites.BENCHMARKS, "counting", __name__)  # this module: its BENCHMARK above
    monkeypatch.setitem(suites.INIT_STATES, "counting", 60)  # more than LIBERO's 50: the family's count decides
    more = ["policy=noop", "suite.name=counting", f"output_root={tmp_path}"]
    validate(composed(*more, "episodes_per_task=60"), POLICIES)
    with pytest.raises(ConfigError, match=r"^episodes_per_task=61 must be in 1\.\.60 \(one of counting's 60 init "):
        validate(composed(*more, "episodes_per_task=61"), POLICIES)
    cfg = composed("policy=noop", "suite.name=counting", "suite.max_steps=10", "episodes_per_task=2", "video=true",
                   f"output_root={tmp_path}")
    summary = run(cfg)
    assert summary["simulator"] == {"counting": "1.0"} and summary["complete"]
    assert (summary["episodes"], summary["successes"]) == (4, 4)
    records = episode_records(tmp_path / "noop" / "counting" / "none-keep1.0" / "seed7")
    assert [(r["task_id"], r["init_index"], r["steps"]) for r in records] == [(0, 0, 3), (0, 1, 3), (1, 0, 3),
                                                                              (1, 1, 3)]
    assert records[3]["task"] == "count to three (1)"
    frames = iio.imread(tmp_path / "noop" / "counting" / "none-keep1.0" / "seed7" / "videos" / records[0]["video"])
    assert [round(f.mean() / 60) for f in frames] == [0, 1, 2, 3]  # the video writer reads the observation
