"""Behaviour cloning pieces (vla_pruner/training, evaluate/demo_data.py, scripts/train_policy.py): the training view
of a frame is the evaluation's, chunks and statistics are OFT's, training is seeded and resumes to the same weights,
and the checkpoint it writes loads as an official OFT checkpoint."""
import json
import sys

import numpy as np
import pytest
import torch

from evaluate.demo_data import build_chunk_data, env_to_model_gripper
from evaluate.demos import DemoRecorder
from evaluate.envs.libero import observation
from evaluate.policy import EpisodeContext
from evaluate.envs.libero_conventions import gripper_to_env
from vla_pruner.models.openvla_oft.model import OpenVLAOFT
from vla_pruner.models.preprocess import center_crop_resize
from vla_pruner.training.augment import crop_boxes, crop_resize
from vla_pruner.training.data import ChunkData, split_episodes
from vla_pruner.training.statistics import dataset_statistics

sys.path.insert(0, "scripts")
import train_policy  # noqa: E402

INSTRUCTION = "pick up the alphabet soup and place it in the basket"


def test_the_centred_training_crop_is_the_evaluation_view():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    centred = crop_resize(images, np.full((4, 2), (1 - 0.9**0.5) / 2))
    assert np.array_equal(centred, np.stack([center_crop_resize(image) for image in images]))
    moved = crop_resize(images, crop_boxes(4, rng))
    assert moved.shape == images.shape and not np.array_equal(moved, centred)


def test_chunks_repeat_the_last_action_of_their_episode():
    actions = np.arange(10, dtype=float)[:, None].repeat(7, 1)
    data = ChunkData(np.zeros((10, 2, 1, 1, 3), np.uint8), np.zeros((10, 8)), actions,
                     np.array([0] * 6 + [1] * 4), [INSTRUCTION] * 2)
    chunk = data.chunk(np.array([3, 7]), 8)[:, :, 0]
    assert chunk[0].tolist() == [3, 4, 5, 5, 5, 5, 5, 5] and chunk[1].tolist() == [7, 8, 9, 9, 9, 9, 9, 9]
    train, val = split_episodes(10, 2, seed=0)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(10))
    with pytest.raises(ValueError, match="at least one"):
        split_episodes(3, 3, seed=0)


def test_gripper_and_statistics_follow_openvla():
    env = np.array([[0.1, 0, 0, 0, 0, 0, -1.0], [0.2, 0, 0, 0, 0, 0, 1.0]])
    model = env_to_model_gripper(env)
    assert model[:, -1].tolist() == [1.0, 0.0]  # open, closed in the model's convention
    np.testing.assert_array_equal(gripper_to_env(model), env)
    stats = dataset_statistics(model, np.zeros((2, 8)), trajectories=1)
    assert stats["action"]["mask"] == [True] * 6 + [False] and len(stats["proprio"]["q01"]) == 8


def fake_raw(t: int) -> dict:
    rng = np.random.default_rng(t)
    return {
        "agentview_image": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
        "robot0_joint_pos": rng.normal(size=7), "robot0_gripper_qpos": rng.uniform(-0.04, 0.04, 2),
        "robot0_eef_pos": rng.normal(size=3) * 0.1, "robot0_eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
    }


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """Three short synthetic demonstrations of libero_object task 0 in the recorder's layout."""
    root = tmp_path_factory.mktemp("demos")
    rec = DemoRecorder(root, recorded_by="test")
    for episode in range(3):
        rec.start(EpisodeContext("libero_object", 0, INSTRUCTION, episode, seed=7, placement_seed=500))
        for t in range(5 + episode):
            rec.add(observation(fake_raw(10 * episode + t), INSTRUCTION),
                    np.r_[np.full(6, 0.1 * t), -1.0 if t < 3 else 1.0])
        rec.finish(True)
    return root


def test_demonstrations_become_training_arrays_once(demo_root, tmp_path):
    data, provenance = build_chunk_data(demo_root, tmp_path)
    assert data.episodes == 3 and len(data.frames) == 5 + 6 + 7
    assert [d["placement_seed"] for d in provenance["demos"]] == [500, 501, 502]
    assert {d["start"] for d in provenance["demos"]} == {"sampled"}
    again, _ = build_chunk_data(demo_root, tmp_path)  # from the cache
    assert np.array_equal(np.asarray(again.frames), np.asarray(data.frames))
    other = DemoRecorder(tmp_path / "dart", recorded_by="test")  # a second source (e.g. DART demonstrations)
    other.start(EpisodeContext("libero_object", 0, INSTRUCTION, 0, seed=7, placement_seed=900))
    for t in range(4):
        other.add(observation(fake_raw(100 + t), INSTRUCTION), np.r_[np.zeros(6), -1.0])
    other.finish(True)
    both, provenance = build_chunk_data([demo_root, tmp_path / "dart"], tmp_path)
    assert both.episodes == 4 and len(both.frames) == 18 + 4
    assert [d["placement_seed"] for d in provenance["demos"]] == [500, 501, 502, 900]
    assert np.array_equal(np.asarray(both.frames)[:18], np.asarray(data.frames))


def train_args(demo_root, out, work, steps):
    return ["--demos", str(demo_root), "--out", str(out), "--work", str(work), "--steps", str(steps),
            "--batch-size", "2", "--validation", "1", "--validate-every", "2", "--save-every", "1",
            "--threads", "1", "--workers", "1"]


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """A checkpoint trained for 3 steps on the synthetic demonstrations."""
    root = tmp_path_factory.mktemp("trained")
    assert train_policy.main(train_args(demo_root, root / "ckpt", root / "work", 3)) == 0
    return root / "ckpt"


def test_training_resumes_to_the_same_weights_and_saves_an_official_checkpoint(demo_root, trained, tmp_path,
                                                                               monkeypatch):
    straight, resumed = trained, tmp_path / "resumed"

    import vla_pruner.training.loop as loop

    real = loop.validation_loss

    def interrupted(*args, **kwargs):  # Ctrl-C at step 2's validation: the state on disk is step 1's
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "validation_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_policy.main(train_args(demo_root, resumed, tmp_path / "w2", 3))
    assert torch.load(tmp_path / "w2" / "train_state.pt", weights_only=False)["step"] == 1 and not resumed.exists()
    monkeypatch.setattr(loop, "validation_loss", real)
    assert train_policy.main(train_args(demo_root, resumed, tmp_path / "w2", 3)) == 0  # the same command resumes
    for name in ("model.safetensors", "action_head--3_checkpoint.pt", "proprio_projector--3_checkpoint.pt"):
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name

    model = OpenVLAOFT.from_pretrained(straight, device="cpu", dtype="float32")  # the official layout
    assert model.action_head.model.fc1.in_features == 7 * 128
    assert model.norm_stats.keys() == {"libero_object_no_noops"}
    info = json.loads((straight / "training.json").read_text())
    assert info["demonstrations"]["count"] == 3 and info["demonstrations"]["validation"] and info["history"]
    assert sum(f.stat().st_size for f in straight.iterdir()) < 25e6


def test_a_continued_training_starts_from_the_saved_weights_and_keeps_the_chain(demo_root, trained, tmp_path):
    """--init: the fresh model is replaced by the checkpoint's weights before the first step; training.json holds
    the earlier stage's record."""
    loaded = OpenVLAOFT.from_pretrained(trained, device="cpu", dtype="float32")
    seen = {}
    args = [*train_args(demo_root, tmp_path / "ckpt", tmp_path / "work", 2), "--init", str(trained), "--lr", "1e-12"]
    assert train_policy.main(args) == 0
    continued = OpenVLAOFT.from_pretrained(tmp_path / "ckpt", device="cpu", dtype="float32")
    for (name, a), b in zip(loaded.state_dict().items(), continued.state_dict().values()):
        seen[name] = torch.allclose(a, b, atol=1e-6)  # lr 1e-12: two steps move nothing visible
    assert all(seen.values()), [k for k, ok in seen.items() if not ok][:5]
    fresh = train_policy.new_oft_model(train_policy.SMALL_CONFIG, 0)
    assert not torch.equal(fresh.action_head.model.fc1.weight, continued.action_head.model.fc1.weight)
    info = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert info["config"]["init"] == str(trained.resolve()) and info["init"]["training"]["config"]["steps"] == 3
    assert train_policy.main([*args[:-2], "--init", str(tmp_path / "nothing")]) == 2


def test_bad_training_arguments_are_one_line_errors(demo_root, tmp_path, capsys):
    assert train_policy.main(train_args(demo_root, tmp_path / "o", tmp_path / "w", 0)) == 2
    assert train_policy.main(train_args(tmp_path / "nothing", tmp_path / "o", tmp_path / "w", 2)) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "steps=0" in errors[0] and "nothing" in errors[1]


@pytest.mark.sim
def test_a_trained_checkpoint_runs_through_the_cli_with_a_pruner(trained, tmp_path):
    """`model=openvla_oft model.checkpoint=DIR` loads the trained policy unchanged; a pruner runs on it."""
    from conftest import run_cli, run_summary

    result = run_cli("model=openvla_oft", f"model.checkpoint={trained}", "suite=libero_object", "tasks=[0]",
                     "episodes_per_task=1", "suite.max_steps=16", "pruner=vla", "keep=0.5", "pruner.prune_layer=1",
                     f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = next(tmp_path.rglob("summary.json")).parent
    summary = run_summary(run_dir)
    assert summary["episodes"] == 1 and summary["policy"]["checkpoint"] == str(trained)


def test_the_shipped_policy_loads_as_an_official_oft_checkpoint_under_25_mb():
    """vla_pruner/checkpoints/openvla_oft_small: what `model=openvla_oft_small` and the quickstart run."""
    from evaluate.config import validate
    from evaluate.policies import POLICIES
    from tests.conftest import REPO, composed

    directory = REPO / "vla_pruner" / "checkpoints" / "openvla_oft_small"
    assert sum(f.stat().st_size for f in directory.iterdir()) < 25e6
    cfg = composed("experiment=quickstart")
    validate(cfg, POLICIES)  # the run's own checks: files, statistics for libero_object, pruner layout
    model = OpenVLAOFT.from_pretrained(directory, device="cpu", dtype="float32")
    assert len(model.language_model.layers) == 8 and cfg.pruner.name == "none"
    assert composed("model=openvla_oft_small", "pruner=vla").pruner.prune_layer == 1
    info = json.loads((directory / "training.json").read_text())
    demos = info["demonstrations"]["sources"]
    assert {d["start"] for d in demos} == {"sampled"} and {(d["suite"], d["task_id"]) for d in demos} == {
        ("libero_object", 0)}
