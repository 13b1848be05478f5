"""The result store: append-and-flush records, torn-line tolerance, experiment identity."""
import json

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
    store.check_identity({"keep": 0.5, "seed": 7})
    store.check_identity({"keep": 0.5, "seed": 7})
    with pytest.raises(RunMismatch, match="different settings \\(keep\\)"):
        store.check_identity({"keep": 0.25, "seed": 7})
    assert json.loads((tmp_path / "run_identity.json").read_text())["keep"] == 0.5
