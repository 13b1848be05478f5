"""A policy that answers with nan or inf stops the run with one `error:` line before the simulator gets the action, on
the sequential path and on the parallel one, instead of recording ordinary failures; MuJoCo's own warnings go to the
run's log, not to MUJOCO_LOG.TXT in the working directory (issue 38, item 7); record_demos over finished episodes
says they are not run again (item 11). No LIBERO simulator: a counting benchmark (tests/test_benchmark_seam.py)."""
import logging

import numpy as np
import pytest

from evaluate.envs import suites
from evaluate.envs.base import Task
from evaluate.policy import NonFiniteAction, PolicyOutput, check_actions
from evaluate.store import ResultStore
from tests.conftest import composed
from tests.test_benchmark_seam import SUITES, Suite


class NanPolicy:
    name = "nan"

    def reset(self, ctx):
        pass

    def act(self, obs):
        return PolicyOutput(actions=np.array([[0.1] * 6 + [-1.0], [np.nan] * 7]))

    def describe(self):
        return {"name": self.name}


def test_a_non_finite_action_stops_the_run_and_records_no_failure(tmp_path, monkeypatch):
    import evaluate.runner as runner
    from evaluate.__main__ import user_errors
    from tests import test_benchmark_seam

    steps = []
    monkeypatch.setattr(test_benchmark_seam.CountingEnv, "step", lambda self, action: steps.append(action))
    monkeypatch.setattr(suites, "SUITES", (*SUITES, Suite("counting", "counting", tasks=2, column="count")))
    monkeypatch.setitem(suites.BENCHMARKS, "counting", "tests.test_benchmark_seam")
    monkeypatch.setattr(runner, "build_policy", lambda cfg: NanPolicy())
    cfg = composed("policy=noop", "suite.name=counting", "suite.max_steps=10", "episodes_per_task=1",
                   f"output_root={tmp_path}")
    with pytest.raises(NonFiniteAction, match=r"^the policy answered task 0, init state 0 with a non-finite action "
                                              r"\(\[nan nan nan nan nan nan nan\]\)") as stop:
        runner.run(cfg)
    assert isinstance(stop.value, user_errors())  # `python -m evaluate`: one error: line
    assert steps == []  # not even the chunk's finite first action: the whole answer is refused
    assert ResultStore(cfg.output_dir).records() == []


def test_the_parallel_path_refuses_a_non_finite_answer_before_a_worker_gets_it():
    from evaluate.parallel import WorkerPool, _Worker

    class Conn:
        sent = []

        def send(self, message):
            self.sent.append(message)

    class Batched(NanPolicy):
        def act_batch(self, queries, prepared=False):
            return [self.act(obs) for _, obs in queries]

    pool = WorkerPool.__new__(WorkerPool)
    pool.policy, pool.prepared = Batched(), False
    pool.workers = [_Worker(0, None, Conn(), job=(Task("libero_object", 3, "t", "x"), 7), phase="waiting", query=1)]
    with pytest.raises(NonFiniteAction, match="task 3, init state 7"):
        pool._answer_queries()
    assert Conn.sent == []


def test_finite_answers_pass_unchanged():
    output = PolicyOutput(actions=np.zeros((8, 7)))
    assert check_actions(output, 0, 0) is output
    with pytest.raises(NonFiniteAction, match=r"\(\[ 0\.  0\.  0\. inf  0\.  0\.  0\.\]\)"):
        check_actions(PolicyOutput(actions=np.array([0, 0, 0, np.inf, 0, 0, 0.0])), 0, 0)


def test_mujoco_warnings_go_to_the_run_log_not_to_the_working_directory(tmp_path, monkeypatch):
    import mujoco

    from evaluate.envs.libero import route_mujoco_warnings

    monkeypatch.chdir(tmp_path)
    run_log = logging.FileHandler(tmp_path / "run.log")  # what Hydra opens in the run directory
    logging.getLogger().addHandler(run_log)
    previous = mujoco.get_mju_user_warning()
    try:
        route_mujoco_warnings()
        model = mujoco.MjModel.from_xml_string(
            "<mujoco><worldbody><body><joint name='j' type='slide'/><geom size='0.1'/></body></worldbody>"
            "<actuator><motor joint='j'/></actuator></mujoco>")
        data = mujoco.MjData(model)
        data.ctrl[:] = np.nan
        mujoco.mj_step(model, data)
    finally:
        mujoco.set_mju_user_warning(previous)
        logging.getLogger().removeHandler(run_log)
        run_log.close()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert "MuJoCo: Nan, Inf or huge value in" in (tmp_path / "run.log").read_text()


def test_record_demos_over_finished_episodes_says_they_are_not_run_again(tmp_path, monkeypatch, caplog):
    """Issue 38, item 11: it used to record nothing and say nothing."""
    import evaluate.runner as runner

    monkeypatch.setattr(suites, "SUITES", (*SUITES, Suite("counting", "counting", tasks=2, column="count")))
    monkeypatch.setitem(suites.BENCHMARKS, "counting", "tests.test_benchmark_seam")
    more = ["policy=noop", "suite.name=counting", "suite.max_steps=10", "tasks=[0]", f"output_root={tmp_path}"]
    runner.run(composed(*more, "episodes_per_task=2"))
    with caplog.at_level(logging.WARNING, logger="evaluate.runner"):
        runner.run(composed(*more, "episodes_per_task=2", "record_demos=true"))
    assert [r.getMessage() for r in caplog.records if "record_demos" in r.getMessage()] == [
        f"record_demos=true: 2 of the 2 episodes asked for are finished in {tmp_path}/noop/counting/none-keep1.0/seed7 "
        "and are not run again, so they record no demonstration; another output_root or placement_seed runs new "
        "episodes"]
