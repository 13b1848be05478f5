"""The result store: append-and-flush records, torn-line tolerance, experiment identity."""
import errno
import json
import os

import pytest

from evaluate.store import EpisodeRecord, ResultStore, RunMismatch


def _record(task_id, init_index, success=True):
    return EpisodeRecord(suite="libero_object", task_id=task_id, task="t", init_index=init_index,
                         success=success, steps=10, wall_time_s=1.0)


def test_append_then_read_back(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_record(0, 0))
    store.append(_record(0, 1, success=False))
    assert [r.key for r in ResultStore(tmp_path).records()] == [(0, 0), (0, 1)]
    assert store.done_keys() == {(0, 0), (0, 1)}


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_record(0, 0))
    with open(store.task_file(0), "a") as f:
        f.write('{"suite": "libero_obj')  # a crash in the middle of a write
    assert store.done_keys() == {(0, 0)}
    store.append(_record(0, 1))
    assert store.done_keys() == {(0, 0), (0, 1)}


def test_one_file_per_task_so_task_shards_never_share_a_file(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_record(3, 0))
    store.append(_record(1, 0))
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == ["task01.jsonl", "task03.jsonl"]
    assert [r.key for r in store.records()] == [(1, 0), (3, 0)]


def test_identity_mismatch_refuses_to_mix_runs(tmp_path):
    store = ResultStore(tmp_path)
    store.check_identity({"keep": 0.5, "seed": 7})  # an empty directory takes any experiment
    assert not (tmp_path / "run_identity.json").exists()  # checking alone claims nothing
    store.write_identity({"keep": 0.5, "seed": 7})
    store.check_identity({"keep": 0.5, "seed": 7})
    with pytest.raises(RunMismatch, match="different settings \\(keep\\)"):
        store.check_identity({"keep": 0.25, "seed": 7})
    assert json.loads((tmp_path / "run_identity.json").read_text())["keep"] == 0.5


def test_records_count_each_episode_once(tmp_path):
    """Directories written before locks existed may hold an episode twice: it counts once, the first one."""
    store = ResultStore(tmp_path)
    store.append(_record(0, 0, success=False))
    store.append(_record(0, 0, success=True))
    store.append(_record(0, 1))
    records = store.records()
    assert [r.key for r in records] == [(0, 0), (0, 1)] and records[0].success is False


def test_completeness_is_derived_from_wanted_and_done(tmp_path):
    store = ResultStore(tmp_path)
    assert store.progress()["complete"] is None  # nothing ever wanted: unknown, not complete
    store.want([(0, 0), (0, 1)])
    store.append(_record(0, 0))
    assert store.progress() == {"episodes_wanted": 2, "episodes_done": 1, "complete": False}
    store.append(_record(0, 1))
    assert store.progress()["complete"] is True
    ResultStore(tmp_path).want([(3, 0)])  # another task shard on the same directory
    assert store.progress() == {"episodes_wanted": 3, "episodes_done": 2, "complete": False}
    store.want([(0, 0)])  # wanting again never shrinks the set
    assert store.wanted_keys() == {(0, 0), (0, 1), (3, 0)}


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    import multiprocessing

    store = ResultStore(tmp_path)
    with store.lock_tasks([0, 1]):
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            message = pool.apply(_try_lock, (str(tmp_path), [1, 2]))
        assert message.startswith("task 1 of ") and f"pid {__import__('os').getpid()}" in message
    with ctx.Pool(1) as pool:  # released when the holder is done
        assert pool.apply(_try_lock, (str(tmp_path), [1, 2])) == "locked"


def _try_lock(run_dir, tasks):
    from evaluate.store import ResultStore, RunLocked

    try:
        with ResultStore(run_dir).lock_tasks(tasks):
            return "locked"
    except RunLocked as e:
        return str(e)


def test_a_record_that_cannot_be_written_is_kept_for_recovery(tmp_path, monkeypatch):
    from evaluate import store as store_module
    from evaluate.store import StoreWriteError

    monkeypatch.setattr(store_module, "RECOVERY_ROOT", tmp_path / "recovered")
    monkeypatch.setattr(store_module.time, "sleep", lambda s: None)
    store = ResultStore(tmp_path / "run")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(store_module.os, "fsync", disk_full)
        with pytest.raises(StoreWriteError, match="No space left on device.*it was saved to .*task00.jsonl"):
            store.append(_record(0, 4))
    store.task_file(0).write_text("")  # what a full disk leaves: the unsynced lines are lost
    # the disk is fixed; the next run restores the record
    assert store.recover() == 1 and [r.key for r in store.records()] == [(0, 4)]
    assert store.recover() == 0


def test_unwritable_output_directory_is_one_line(tmp_path):
    from evaluate.store import StoreError, check_writable

    check_writable(tmp_path / "a" / "b")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"output directory .*file/run is not writable"):
        check_writable(blocker / "run")


def test_the_shipped_policy_is_the_same_experiment_from_a_moved_clone(tmp_path):
    """The trained policy's checkpoint ships in the repository: its identity names it as the config does, so a run
    resumes from another clone; a directory recorded with this clone's absolute path (before) still resumes."""
    from omegaconf import OmegaConf

    from evaluate.analysis.flops import model_dims
    from evaluate.config import CONFIG_DIR, local, run_identity
    from tests.conftest import composed

    cfg = composed("model=openvla_oft_small", "suite=libero_object")
    identity = run_identity(cfg)
    shipped = "${project_path:vla_pruner/checkpoints/openvla_oft_small}"
    assert identity["model"]["checkpoints"] == {"libero_object": shipped}
    assert str(CONFIG_DIR.parent) not in json.dumps(identity)
    # the report reads the checkpoint's architecture (its FLOPs) from a recorded identity: this clone's files
    assert local(identity)["model"] == OmegaConf.to_container(cfg.model, resolve=True)
    assert model_dims(identity["model"]).num_layers == 8
    store = ResultStore(tmp_path)
    for recorded, resumes in ((f"{CONFIG_DIR.parent}/vla_pruner/checkpoints/openvla_oft_small", True),
                              ("/elsewhere/clone/vla_pruner/checkpoints/openvla_oft_small", False)):
        before = {**identity, "model": {**identity["model"], "checkpoints": {"libero_object": recorded}}}
        (tmp_path / "run_identity.json").write_text(json.dumps(before))
        if resumes:
            store.check_identity(identity)
        else:  # an older clone's absolute path names other files than this clone's
            with pytest.raises(RunMismatch, match="different settings \\(model\\)"):
                store.check_identity(identity)
