"""Demo recording round trip: only successful episodes are written, in LIBERO's HDF5 layout."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from evaluate.demos import OBS_KEYS, DemoFileError, DemoRecorder, demo_index, load_demos
from evaluate.envs.libero import observation
from evaluate.policy import EpisodeContext

INSTRUCTION = "pick up the ketchup and place it in the basket"


def fake_obs(t: int) -> dict:
    rng = np.random.default_rng(t)
    return {
        "agentview_image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
        "robot0_joint_pos": rng.normal(size=7),
        "robot0_gripper_qpos": rng.normal(size=2),
        "robot0_eef_pos": rng.normal(size=3),
        "robot0_eef_quat": np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)]),  # 0.5 rad about z
    }


def record(rec: DemoRecorder, init_index: int, steps: int, success: bool):
    rec.start(EpisodeContext("libero_object", 3, INSTRUCTION, init_index, seed=7))
    for t in range(steps):
        rec.add(observation(fake_obs(t), INSTRUCTION), np.full(7, t, dtype=float))
    return rec.finish(success)


def test_round_trip_keeps_successes_only(tmp_path):
    rec = DemoRecorder(tmp_path)
    path = record(rec, init_index=0, steps=4, success=True)
    assert record(rec, init_index=1, steps=3, success=False) is None
    record(rec, init_index=2, steps=5, success=True)

    demos = load_demos(tmp_path)
    assert [d["init_index"] for d in demos] == [0, 2]
    first = demos[0]
    assert first["suite"] == "libero_object" and first["task_id"] == 3 and first["seed"] == 7
    assert first["instruction"] == INSTRUCTION
    np.testing.assert_array_equal(first["actions"][:, 0], np.arange(4))
    np.testing.assert_array_equal(first["obs"]["agentview_rgb"][1], fake_obs(1)["agentview_image"])
    np.testing.assert_array_equal(first["obs"]["eye_in_hand_rgb"][2], fake_obs(2)["robot0_eye_in_hand_image"])
    np.testing.assert_allclose(first["obs"]["ee_ori"][0], [0, 0, 0.5])
    assert first["robot_states"].shape == (4, 9) and first["dones"].tolist() == [0, 0, 0, 1]

    # LIBERO's own layout, readable without this package
    assert path.name == "pick_up_the_ketchup_and_place_it_in_the_basket_demo.hdf5"
    with h5py.File(path, "r") as f:
        assert sorted(f["data"]) == ["demo_0", "demo_1"]
        assert f["data"].attrs["num_demos"] == 2 and f["data"].attrs["total"] == 9
        assert json.loads(f["data"].attrs["problem_info"])["language_instruction"].startswith("pick up")
        assert {"agentview_rgb", "eye_in_hand_rgb", "joint_states", "gripper_states", "ee_states"} <= set(
            f["data/demo_1/obs"])


def test_unfinished_episode_is_not_written(tmp_path):
    rec = DemoRecorder(tmp_path)
    rec.start(EpisodeContext("libero_spatial", 0, "x", 0, seed=0))
    rec.add(observation(fake_obs(0), "x"), np.zeros(7))
    rec.close()
    assert rec.finish(True) is None and load_demos(tmp_path) == []


def good_file(root) -> Path:
    rec = DemoRecorder(root)
    return record(rec, init_index=0, steps=4, success=True)


def spoil(path: Path, case: str) -> str:
    """Make a recorded demo file malformed as `case` says; returns what the refusal must name."""
    with h5py.File(path, "a") as f:
        demo = f["data/demo_0"]
        if case == "no data group":
            del f["data"]
            return "has no `data` group"
        if case == "no actions":
            del demo["actions"]
            return "demo_0 has no actions"
        if case == "no wrist camera":
            del demo["obs/eye_in_hand_rgb"]
            return "demo_0 has no obs/eye_in_hand_rgb"
        if case == "zero-length demo":
            for key in ("actions", "robot_states", *(f"obs/{k}" for k in OBS_KEYS)):
                empty = np.zeros((0, *demo[key].shape[1:]), demo[key].dtype)
                del demo[key]
                demo[key] = empty
            return "demo_0 has no steps"
        if case == "uneven arrays":
            robot_states = demo["robot_states"][:-1]
            del demo["robot_states"]
            demo["robot_states"] = robot_states
            return "demo_0: robot_states do not have one row per step"
    raise ValueError(case)


MALFORMED = ["no data group", "no actions", "no wrist camera", "zero-length demo", "uneven arrays"]


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_demo_file_is_named_with_what_it_lacks(case, tmp_path):
    path = good_file(tmp_path)
    expected = spoil(path, case)
    with pytest.raises(DemoFileError) as error:
        demo_index(tmp_path)
    assert str(error.value).startswith(str(path)) and expected in str(error.value), str(error.value)


def test_an_unreadable_file_is_named_and_other_groups_than_demos_are_not_demos(tmp_path):
    junk = tmp_path / "junk_demo.hdf5"
    junk.write_text("not hdf5")
    with pytest.raises(DemoFileError, match=f"^{junk} is not a demo file"):
        demo_index(junk)
    path = good_file(tmp_path / "good")
    with h5py.File(path, "a") as f:  # robomimic keeps filter keys beside the demos
        f["data"].create_group("mask")
    assert [entry["name"] for entry in demo_index(path)] == ["demo_0"]
