"""What a week-long sweep relies on, through the real CLI and simulator: completeness derived from the records,
one writer per task, a failed start that blocks nothing, sweeps that check every point first and go on past a
point that fails while running."""
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (REPO, cli_command, episode_records, noop_run_dir, paused, require_fixtures, run_cli,
                            run_summary)

pytestmark = pytest.mark.sim
NOOP = ["policy=noop", "suite=libero_object", "suite.max_steps=3"]


def _keys(run_dir: Path) -> list[tuple[int, int]]:
    return sorted((r["task_id"], r["init_index"]) for r in episode_records(run_dir))


def test_task_shards_share_completeness_and_extending_a_run_makes_it_incomplete(tmp_path):
    run_dir = noop_run_dir(tmp_path, "libero_object")
    shard = [*NOOP, "episodes_per_task=1", "expected_tasks=[0,1]", f"output_root={tmp_path}"]
    assert run_cli(*shard, "tasks=[0]").returncode == 0
    summary = run_summary(run_dir)  # the other shard has not run: not complete
    assert (summary["complete"], summary["episodes_wanted"], summary["episodes_done"]) == (False, 2, 1)
    result = run_cli(*shard, "tasks=[1]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert run_summary(run_dir)["complete"] is True and _keys(run_dir) == [(0, 0), (1, 0)]
    # extending the finished run: incomplete (from its start) until the new episode is in
    from evaluate.store import ResultStore

    ResultStore(run_dir).want([(1, 1)])
    assert ResultStore(run_dir).progress()["complete"] is False
    assert run_cli(*NOOP, "tasks=[1]", "episodes_per_task=2", f"output_root={tmp_path}").returncode == 0
    assert run_summary(run_dir)["complete"] is True and run_summary(run_dir)["episodes"] == 3


def test_a_second_writer_on_the_same_tasks_is_refused(tmp_path):
    overrides = [*NOOP, "tasks=[0]", "episodes_per_task=2", f"output_root={tmp_path}"]
    run_dir = noop_run_dir(tmp_path, "libero_object")
    first = subprocess.Popen(cli_command(*overrides), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 300
    while not (run_dir / "summary.json").exists():  # written once the run holds its lock and has started
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.2)
    with paused(first):
        second = run_cli(*overrides)
    assert second.returncode != 0
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("error: task 0 of ") and f"pid {first.pid}" in last, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert _keys(run_dir) == [(0, 0), (0, 1)]  # nothing recorded twice
    assert run_summary(run_dir)["complete"] is True


def test_a_failed_start_does_not_claim_the_directory(tmp_path):
    """A typo in the checkpoint used to write run_identity.json before the model loaded, so the corrected
    command was refused."""
    out = tmp_path / "run"
    bad_ckpt = tmp_path / "ckpt"
    bad_ckpt.mkdir()
    (bad_ckpt / "config.json").write_text("{not json")
    common = ["policy=vla", "model=openvla_tiny", "suite=libero_object", "tasks=[0]", "episodes_per_task=1",
              "suite.max_steps=2", f"output_dir={out}"]
    failed = run_cli(*common, f"model.checkpoint={bad_ckpt}")
    assert failed.returncode != 0 and failed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (out / "run_identity.json").exists()
    fixed = run_cli(*common)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert run_summary(out)["complete"] is True


def test_a_sweep_checks_every_point_before_running_any(tmp_path):
    result = run_cli("-m", "suite=libero_object", "pruner=fastv", "tasks=[0]", "episodes_per_task=1", "keep=0.5,2.0",
                     f"output_root={tmp_path}")  # (under policy=noop a changed keep is refused in itself)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: keep=2.0 is outside (0, 1]") and "sweep point" in last, result.stderr[-2000:]
    assert not list(tmp_path.rglob("*.jsonl"))  # the good point did not run either


def test_a_sweep_point_that_fails_while_running_does_not_stop_the_others(tmp_path, monkeypatch):
    """Weights re-saved without one tensor pass the pre-run file checks (a readable safetensors header) but
    cannot be loaded: that point fails at run time. They are the cached tiny model (policy=noop must keep the
    default model settings, so the checkpoint is not an override)."""
    import json

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tmp_path / "cache"))
    bad_ckpt = tmp_path / "cache" / "openvla_tiny-seed0"
    bad_ckpt.mkdir(parents=True)
    for f in (require_fixtures() / "openvla_tiny_hf").iterdir():
        (bad_ckpt / f.name).write_bytes(f.read_bytes())
    config = json.loads((bad_ckpt / "config.json").read_text())
    (bad_ckpt / "config.json").write_text(json.dumps({**config, "build_seed": 0}))  # as the cache's build records it
    weights = load_file(bad_ckpt / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, bad_ckpt / "model.safetensors", metadata={"format": "pt"})
    result = run_cli("-m", "policy=vla,noop", "model=openvla_tiny", "suite=libero_object", "suite.max_steps=2",
                     "tasks=[0]", "episodes_per_task=1", f"output_root={tmp_path / 'runs'}")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error: 1 sweep point(s) failed"))
    assert "policy=vla" in lines[at + 1] and "mismatched weights" in lines[at + 1], result.stderr[-3000:]
    noop_dir = noop_run_dir(tmp_path / "runs", "libero_object")
    assert run_summary(noop_dir)["complete"] is True  # the point after the failed one ran


def test_weights_replaced_at_the_same_path_are_another_experiment(tmp_path):
    """A policy retrained into the same directory: the resumed run refuses it (the fingerprint in run_identity.json)
    rather than pooling its episodes with the old weights'; a run recorded before fingerprints still resumes."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(require_fixtures() / "openvla_tiny_hf", ckpt)
    common = ["model=openvla_tiny", f"model.checkpoint={ckpt}", "model.build_seed=null",  # the fixture, as it is
              "suite=libero_object", "tasks=[0]", "suite.max_steps=2", f"output_root={tmp_path / 'runs'}"]
    assert run_cli(*common, "episodes_per_task=1").returncode == 0
    [identity_file] = (tmp_path / "runs").rglob("run_identity.json")
    assert identity_file.parent.relative_to(tmp_path / "runs").parts[0] == "openvla_tiny@ckpt"  # its own directory
    weights = load_file(ckpt / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3  # "retrained": same files, same shapes, other values
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    refused = run_cli(*common, "episodes_per_task=2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ") and "(weights)" in refused.stderr
    assert _keys(identity_file.parent) == [(0, 0)]
    identity = json.loads(identity_file.read_text())
    del identity["weights"]  # as a run directory written before fingerprints
    identity_file.write_text(json.dumps(identity))
    resumed = run_cli(*common, "episodes_per_task=2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _keys(identity_file.parent) == [(0, 0), (0, 1)]
    assert "weights" in json.loads(identity_file.read_text())  # from now on checked
