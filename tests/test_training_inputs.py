"""scripts/train_policy.py never deletes what it did not write, never trains on bad data and never crashes (issue 38):
--out and --work, the demonstrations, the split and a saved state are checked before any preprocessing, each refusal
one `error:` line; a stop says at which step and resumes."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from evaluate.demo_data import build_chunk_data
from evaluate.demos import DemoRecorder
from evaluate.envs.libero import observation
from evaluate.policy import EpisodeContext
from tests.conftest import REPO
from tests.test_demos import MALFORMED, spoil
from tests.test_training import INSTRUCTION, demo_root, fake_raw, train_args, train_policy  # noqa: F401 (a fixture)


def record(root, suite="libero_object", episodes=3, placement=500, frames=0, action_scale=0.1):
    """`episodes` synthetic demonstrations in the recorder's layout (`frames` shifts the images, `action_scale` the
    actions: the same attributes with other content)."""
    rec = DemoRecorder(root, recorded_by="test")
    for episode in range(episodes):
        rec.start(EpisodeContext(suite, 0, INSTRUCTION, episode, seed=7, placement_seed=placement))
        for t in range(5 + episode):
            rec.add(observation(fake_raw(frames + 10 * episode + t), INSTRUCTION),
                    np.r_[np.full(6, action_scale * t), -1.0 if t < 3 else 1.0])
        rec.finish(True)
    return root


def refused(capsys, args) -> str:
    """The one `error:` line of a refused command (exit 2)."""
    assert train_policy.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def preprocessed(directory) -> list:
    return sorted(directory.glob("demo-*.npz")) if directory.is_dir() else []


def test_the_loop_saves_the_step_it_stops_at_and_refuses_a_state_of_other_data(demo_root, tmp_path, monkeypatch):
    """A stop asked for between steps saves that step (not only every save_every) and raises TrainingStopped; the
    state records the data it trained on, and other data is a ResumeError."""
    import vla_pruner.training.loop as loop
    from vla_pruner.training.statistics import dataset_statistics

    monkeypatch.setattr(loop, "validation_loss", lambda *args, **kwargs: 0.0)
    data, _ = build_chunk_data(demo_root, tmp_path / "cache")
    processor = train_policy.ImageProcessor.from_config(train_policy.PREPROCESSOR_CONFIG)
    batcher = loop.Batcher(data, processor, lambda text: torch.tensor([[1, 2, 3]]),
                           dataset_statistics(data.actions, data.states, data.episodes))
    cfg = loop.TrainConfig(steps=10, batch_size=2, save_every=100, threads=1)
    requested = iter([False, False, True])
    state = tmp_path / "state.pt"
    with pytest.raises(loop.TrainingStopped, match="stopped at step 3"):
        loop.train(train_policy.new_oft_model(train_policy.SMALL_CONFIG, 0), batcher, data.frames_of([0, 1]),
                   data.frames_of([2]), cfg, state, lambda entry: None, {"demos": "these"}, lambda: next(requested))
    assert torch.load(state, weights_only=False)["step"] == 3
    assert loop.saved_state(state, cfg, {"demos": "these"}, mmap=True)["step"] == 3
    with pytest.raises(loop.ResumeError, match="other demonstrations or another validation split"):
        loop.saved_state(state, cfg, {"demos": "others"})


def test_the_cache_is_keyed_by_content(tmp_path):
    """Item 5: a demo re-recorded with the same attributes (same task, start, placement) trains on its own frames."""
    root = record(tmp_path / "demos")
    first, _ = build_chunk_data(root, tmp_path / "cache")
    first = np.array(first.frames)
    for file in root.rglob("*.hdf5"):
        file.unlink()
    record(root, frames=1000)
    again, _ = build_chunk_data(root, tmp_path / "cache")
    assert not np.array_equal(np.asarray(again.frames), first)
    copied = tmp_path / "copy"
    copied.mkdir()
    for file in root.rglob("*.hdf5"):  # a copied file keeps its cache
        (copied / file.name).write_bytes(file.read_bytes())
    before = len(list((tmp_path / "cache").glob("demo-*.npz")))
    build_chunk_data(copied, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("demo-*.npz"))) == before == 6


def test_a_scan_refuses_non_finite_values_and_keeps_a_demo_given_twice_once(tmp_path):
    from evaluate.demo_data import scan_demos
    from evaluate.demos import DemoFileError

    root = record(tmp_path / "demos")
    file = next(root.rglob("*.hdf5"))
    demos = scan_demos([root, file, root])
    assert [e["name"] for e in demos.entries] == ["demo_0", "demo_1", "demo_2"] and demos.duplicates == 6
    with h5py.File(file, "a") as f:
        f["data/demo_2/obs/ee_pos"][3, 1] = np.inf
    with pytest.raises(DemoFileError, match=f"^{file} demo_2: obs/ee_pos holds a non-finite value .* at step 3"):
        scan_demos(root)


