"""The shipped policy succeeds in the real simulator (issue 25): the quickstart's first episode, init state 0 of the
task it was trained on. It guards everything a success depends on that the per-query oracle tests do not see end to
end: the live observation, the image path, the checkpoint's statistics, the chunk's un-normalised actions stepped
eight at a time, the env's success check. Over all 50 init states this policy solves 50 (README)."""
import math

import pytest

from tests.conftest import episode_records, run_cli, run_summary

pytestmark = pytest.mark.sim


def test_the_shipped_policy_solves_the_first_init_state_of_its_task(tmp_path):
    result = run_cli("experiment=quickstart", "episodes_per_task=1", "num_envs=1", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "openvla_oft_small" / "libero_object" / "none-keep1.0" / "seed7"
    assert run_summary(run_dir)["success_rate"] == 1.0
    (record,) = episode_records(run_dir)
    assert record["init_index"] == 0 and record["status"] == "ok"
    assert record["success"] and record["steps"] < 200  # the expert's pace: about 125 of the suite's 280
    assert len(record["queries"]) == math.ceil(record["steps"] / 8)  # one query per chunk of 8 actions
