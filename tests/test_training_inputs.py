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


# ------------------------------------------------------------------------------------------------- --out, --work


def test_out_is_replaced_only_when_new_empty_or_a_checkpoint_of_this_script(demo_root, tmp_path, capsys, monkeypatch):
    """Items 1-2: `--out .` (the checkout, run from the repository root), a directory of other files, --out and --work
    overlapping: refused before any work, nothing deleted."""
    project = tmp_path / "checkout"
    (project / "results").mkdir(parents=True)
    (project / "README.md").write_text("mine")
    (project / "results" / "table.csv").write_text("mine")
    monkeypatch.chdir(project)
    work = tmp_path / "work"
    assert "--out" in refused(capsys, train_args(demo_root, ".", work, 2))
    assert "holds files this script did not write (table.csv)" in refused(
        capsys, train_args(demo_root, "results", work, 2))
    assert "overlap" in refused(capsys, train_args(demo_root, tmp_path / "same", tmp_path / "same", 2))
    assert "overlap" in refused(capsys, train_args(demo_root, tmp_path / "w" / "ckpt", tmp_path / "w", 2))
    assert "overlap" in refused(capsys, train_args(demo_root, tmp_path / "o", tmp_path / "o" / "work", 2))
    (tmp_path / "file").write_text("mine")
    assert "is not a directory" in refused(capsys, train_args(demo_root, tmp_path / "file", work, 2))
    assert (project / "README.md").read_text() == "mine" and (project / "results" / "table.csv").read_text() == "mine"
    assert (tmp_path / "file").read_text() == "mine" and not preprocessed(work)


def test_an_empty_directory_and_an_earlier_checkpoint_are_replaced(demo_root, tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    assert train_policy.main(train_args(demo_root, out, tmp_path / "work", 1)) == 0
    first = (out / "model.safetensors").read_bytes()
    assert train_policy.main([*train_args(demo_root, out, tmp_path / "work2", 2), "--lr", "1e-3"]) == 0
    assert (out / "model.safetensors").read_bytes() != first and (out / "action_head--2_checkpoint.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "work", "work2"]  # no staging left behind


def test_the_default_work_directory_is_the_outs_and_the_datas(demo_root, tmp_path, monkeypatch):
    """Item 3: a second training with other demonstrations and another --out (same last name) trains anew; it used
    to 'resume' the first one's finished state and save its weights with the second's statistics."""
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tmp_path / "cache"))
    other = record(tmp_path / "other", placement=900, frames=1000, action_scale=0.3)
    args = lambda demos, out: [a for a in train_args(demos, out, "-", 2) if a not in ("--work", "-")]  # noqa: E731
    assert train_policy.main(args(demo_root, tmp_path / "a" / "ckpt")) == 0
    assert train_policy.main(args(other, tmp_path / "b" / "ckpt")) == 0
    a, b = (json.loads((tmp_path / x / "ckpt" / "training.json").read_text()) for x in "ab")
    assert {d["placement_seed"] for d in b["demonstrations"]["sources"]} == {900, 901, 902}
    assert b["history"] and b["history"] != a["history"]
    assert (tmp_path / "a" / "ckpt" / "model.safetensors").read_bytes() != (
        tmp_path / "b" / "ckpt" / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------------ resuming


def test_a_state_of_other_data_or_flags_is_not_resumed(demo_root, tmp_path, capsys):
    """Items 4 and 13: the state records the demonstrations and the split; another --validation (another split) or
    other flags are one line naming the difference, not a traceback."""
    work = tmp_path / "work"
    assert train_policy.main(train_args(demo_root, tmp_path / "ckpt", work, 1)) == 0
    capsys.readouterr()
    state = torch.load(work / "train_state.pt", weights_only=False)
    assert len(state["data"]["demos"]) == 3 and len(state["data"]["validation"]) == 1
    args = train_args(demo_root, tmp_path / "ckpt", work, 1)
    args[args.index("--validation") + 1] = "2"
    assert "other demonstrations or another validation split" in refused(capsys, args)
    message = refused(capsys, [*train_args(demo_root, tmp_path / "ckpt", work, 1), "--lr", "1e-3"])
    assert "holds the state of another training (lr: 0.0003 there, 0.001 here)" in message
    other = record(tmp_path / "other", placement=900, frames=1000)
    assert "other demonstrations" in refused(capsys, train_args(other, tmp_path / "ckpt", work, 1))


def test_a_stopped_training_saves_its_step_and_says_how_to_resume(demo_root, tmp_path):
    """Item 13: SIGTERM (what SLURM sends) and Ctrl-C stop after the step, save it, and say so in one line; the same
    command resumes from there."""
    work = tmp_path / "work"
    command = [sys.executable, str(REPO / "scripts" / "train_policy.py"),
               *train_args(demo_root, tmp_path / "ckpt", work, 100000)]
    command[command.index("--save-every") + 1] = "1000"  # the stop saves its own step
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    steps = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        deadline = time.monotonic() + 300
        while logged(work) <= max(steps, default=0):  # training, past where the last run stopped
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1 and "Traceback" not in stderr, stderr
        step = torch.load(work / "train_state.pt", weights_only=False)["step"]
        assert stderr.strip().splitlines()[-1] == (
            f"error: stopped by {signal.Signals(signum).name} at step {step} of 100000 (the state is in {work}); "
            "re-run the same command to resume")
        steps.append(step)
    assert 2 <= steps[0] < steps[1]  # the second run resumed from the first one's step
    assert not (tmp_path / "ckpt").exists()


def test_a_signal_while_starting_gives_the_stop_line_too(demo_root, tmp_path):
    command = [sys.executable, str(REPO / "scripts" / "train_policy.py"),
               *train_args(demo_root, tmp_path / "ckpt", tmp_path / "work", 100000)]
    process = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # importing, checking or preprocessing
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGTERM ") and last.endswith("; re-run the same command to resume"), last


def logged(work) -> int:
    """The last step the training log of `work` holds (0 before any)."""
    log = work / "log.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    return max([json.loads(line)["step"] for line in lines if line.strip()], default=0)


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


# ------------------------------------------------------------------------------------------------ the data


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


def test_non_finite_demonstrations_and_learning_rates_are_refused(demo_root, tmp_path, capsys):
    """Item 6: one NaN action used to give loss nan, all-NaN statistics and 'saved'; --lr inf non-finite weights."""
    root = record(tmp_path / "demos")
    file = next(root.rglob("*.hdf5"))
    with h5py.File(file, "a") as f:
        f["data/demo_1/actions"][2, 0] = np.nan
    message = refused(capsys, train_args(root, tmp_path / "o", tmp_path / "w", 2))
    assert f"{file} demo_1: actions holds a non-finite value (nan or inf) at step 2" in message
    for lr in ("inf", "nan", "-1"):
        assert f"lr={float(lr)} must be a positive finite number" in refused(
            capsys, [*train_args(demo_root, tmp_path / "o", tmp_path / "w", 2), "--lr", lr])
    assert not preprocessed(tmp_path / "w") and not (tmp_path / "o").exists()


def test_a_loss_that_becomes_non_finite_stops_the_training(demo_root, tmp_path, capsys, monkeypatch):
    import vla_pruner.training.loop as loop

    real = loop.chunk_loss
    losses = iter([1.0, float("nan")])
    monkeypatch.setattr(loop, "chunk_loss", lambda p, t: real(p, t) * next(losses))
    assert train_policy.main(train_args(demo_root, tmp_path / "o", tmp_path / "w", 3)) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: the training loss became nan at step 2 ") and "lower --lr" in line, line
    assert torch.load(tmp_path / "w" / "train_state.pt", weights_only=False)["step"] == 1  # step 2 not saved
    assert not (tmp_path / "o").exists()


def test_statistics_are_keyed_by_the_base_suite_and_a_demo_given_twice_counts_once(tmp_path):
    """Item 9: LIBERO-PRO demos store their statistics under the base suite's key (the key a run looks up); the same
    demonstrations given twice (a directory and one of its files) are trained on once."""
    root = record(tmp_path / "demos", suite="libero_object_lan", episodes=3)
    file = next(root.rglob("*.hdf5"))
    args = train_args(root, tmp_path / "ckpt", tmp_path / "work", 1)
    args[1:2] = [str(root), str(file)]
    assert train_policy.main(args) == 0
    info = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert info["demonstrations"]["count"] == 3 and info["demonstrations"]["statistics"] == "libero_object_no_noops"
    assert json.loads((tmp_path / "ckpt" / "dataset_statistics.json").read_text()).keys() == {"libero_object_no_noops"}


def test_demos_without_a_suite_or_of_two_suites_are_refused(tmp_path, capsys):
    root = record(tmp_path / "demos")
    file = next(root.rglob("*.hdf5"))
    with h5py.File(file, "a") as f:
        del f["data/demo_2"].attrs["suite"]
    assert f"{file} demo_2 records no suite" in refused(capsys, train_args(root, tmp_path / "o", tmp_path / "w", 2))
    goal = record(tmp_path / "goal", suite="libero_goal", placement=900, frames=1000)
    two = train_args(record(tmp_path / "object"), tmp_path / "o", tmp_path / "w", 2)
    two[1:2] = [str(tmp_path / "object"), str(goal)]
    assert "demonstrations of several suites (libero_object in " in refused(capsys, two)
    assert not preprocessed(tmp_path / "w")


def test_several_tasks_of_one_suite_train_together(tmp_path):
    """A multi-task policy (e.g. LIBERO-Goal's tasks): one suite, several tasks and instructions."""
    rec = DemoRecorder(tmp_path / "demos", recorded_by="test")
    for task, text in enumerate(["open the middle drawer of the cabinet", "put the bowl on the stove"]):
        for episode in range(2):
            rec.start(EpisodeContext("libero_goal", task, text, episode, seed=7, placement_seed=100 + episode))
            for t in range(4):
                rec.add(observation(fake_raw(50 * task + 10 * episode + t), text), np.r_[np.full(6, 0.1 * t), -1.0])
            rec.finish(True)
    assert train_policy.main(train_args(tmp_path / "demos", tmp_path / "ckpt", tmp_path / "work", 2)) == 0
    info = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert {d["task_id"] for d in info["demonstrations"]["sources"]} == {0, 1}
    assert info["demonstrations"]["statistics"] == "libero_goal_no_noops"


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_demo_file_is_one_line_before_any_preprocessing(case, tmp_path, capsys):
    """Item 12."""
    root = record(tmp_path / "demos", episodes=1)
    file = next(root.rglob("*.hdf5"))
    expected = spoil(file, case)
    message = refused(capsys, train_args(root, tmp_path / "o", tmp_path / "w", 2))
    assert str(file) in message and expected in message, message
    assert not preprocessed(tmp_path / "w")


def test_the_split_the_seed_and_other_numbers_are_checked_before_preprocessing(demo_root, tmp_path, capsys):
    """Item 15 and the odd ones: each used to be refused only after every demonstration was preprocessed (or
    accepted)."""
    def with_flag(flag, value):
        args = train_args(demo_root, tmp_path / "o", tmp_path / "w", 2)
        args[args.index(flag) + 1] = value
        return args

    assert "validation=-1" in refused(capsys, with_flag("--validation", "-1"))
    assert "validation=3" in refused(capsys, with_flag("--validation", "3"))  # 3 demonstrations
    assert "seed=-1 must be at least 0" in refused(capsys, with_flag("--workers", "1") + ["--seed", "-1"])
    assert "--workers=0 must be at least 1" in refused(capsys, with_flag("--workers", "0"))
    assert "--batch-size 64 is larger than the" in refused(capsys, with_flag("--batch-size", "64"))
    with pytest.raises(SystemExit, match="2"):
        train_policy.main(with_flag("--steps", "many"))
    assert capsys.readouterr().err == "error: argument --steps: invalid int value: 'many'\n"
    assert not preprocessed(tmp_path / "w")
