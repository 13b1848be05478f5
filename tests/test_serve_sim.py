"""The harness on both sides of vla-eval's model-server protocol, in the real simulator (issue 39), with the trained
policy on the task it was trained on, two episodes (of 40 steps, but the second in-process/remote one of 16):

- vla-eval's own LIBERO benchmark (`vla-eval run --no-docker`) against `python -m evaluate.serve`: its episodes end as
  the server recorded them, and the server's records are a run directory the report reads, FLOPs included;
- the same init states in-process and as `policy=remote` through our own server: the same actions, step for step.
"""
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, composed, episode_records
from tests.test_serve import require_vla_eval

pytestmark = pytest.mark.sim
vla_eval = require_vla_eval()
MODEL = ["model=openvla_oft_small", "suite=libero_object", "suite.max_steps=40"]
RUN = Path("openvla_oft_small") / "libero_object" / "none-keep1.0" / "seed7"
VLA_EVAL_CONFIG = REPO / "scripts" / "crosscheck" / "vla_eval_libero_object_task0.yaml"


def _serve(tmp_path: Path, *overrides: str) -> tuple[subprocess.Popen, str]:
    """`python -m evaluate.serve` on a free port; (the process, its URL) once it listens."""
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "evaluate.serve", *overrides, "port=0",
                               f"output_root={tmp_path / 'served'}"], cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                              text=True)
    for line in server.stdout:
        if line.startswith("serving "):
            return server, line.split()[1]
    server.wait()
    pytest.fail(f"the server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")


def test_vla_eval_libero_benchmark_against_our_server(tmp_path):
    server, url = _serve(tmp_path, *MODEL)
    try:
        out = tmp_path / "vla_eval"
        client = subprocess.run(
            [str(Path(sys.executable).parent / "vla-eval"), "run", "--no-docker", "-c", str(VLA_EVAL_CONFIG),
             "--server-url", url, "--output-dir", str(out), "--benchmark-field", "episodes_per_task=2"],
            cwd=tmp_path, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
            capture_output=True, text=True, timeout=600)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert client.returncode == 0, client.stderr[-3000:]
    assert "Spec validation passed" in client.stderr and "max_steps=40" in client.stderr  # the server's step limit
    [task] = json.loads((out / "LIBEROBenchmark_libero_object_aggregate.json").read_text())["tasks"]
    theirs = {e["episode_idx"]: (e["metrics"]["success"], e["steps"]) for e in task["episodes"]}
    assert task["num_episodes"] == 2 and "failure_reason" not in str(task)

    run_dir = tmp_path / "served" / RUN
    records = episode_records(run_dir)
    assert {r["init_index"]: (r["success"], r["steps"]) for r in records} == theirs
    for record in records:  # one query per 8-step chunk, each with its cost
        assert len(record["queries"]) == math.ceil(record["steps"] / 8)
        assert all(q["kept_visual"] == 512 and len(q["prefill_tokens"]) == 8 for q in record["queries"])
    identity = json.loads((run_dir / "run_identity.json").read_text())
    assert identity["served"] is True and identity["suite"]["max_steps"] == 40 and "weights" in identity
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["episodes"] == 2 and summary["cost"]["prefill_tmacs_mean"] > 0

    report = subprocess.run([sys.executable, "-m", "evaluate.report", str(tmp_path / "served"), "--out",
                             str(tmp_path / "results")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    [row] = csv.DictReader(open(tmp_path / "results" / "table1.csv"))
    assert row["model"] == "openvla_oft_small" and row["episodes"] == "2" and float(row["prefill_tmacs"]) > 0


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    """EPISODE_END gets no reply: the server records the last episode a moment after the client moved on."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


class Recording:
    """A task env that keeps the actions it executes."""

    def __init__(self, env):
        self.env, self.actions = env, []

    live = property(lambda self: self.env.live)

    def start_episode(self, init_index):
        self.actions.append([])
        return self.env.start_episode(init_index)

    def step(self, action):
        self.actions[-1].append(np.array(action, dtype=np.float64))
        return self.env.step(action)


STEPS = ((0, 40), (1, 16))  # (init index, steps) of test_remote_episodes_equal_in_process_ones


def test_remote_episodes_equal_in_process_ones(tmp_path):
    """Episodes 0 and 1, in this process and through our server over the protocol: the same actions, bit for bit,
    the same outcomes, and the server records them with the queries the in-process run made. Episode 0 runs the
    server's 40 steps (5 chunks); episode 1, which only has to show the session starting the next episode afresh
    (a chunk or pruner state left from episode 0 would change its first actions), stops at 16 (two chunks, one
    boundary) on both sides, and the server must record the 16 the client ran."""
    from evaluate.envs.suites import suite_benchmark
    from evaluate.policies import build_policy, cameras_for
    from evaluate.policies.remote import RemotePolicy
    from evaluate.rollout import episode_context, open_env, run_episode
    from evaluate.serve.records import ServedRecords
    from evaluate.serve.server import HarnessServer

    cfg = composed(*MODEL, f"output_root={tmp_path}")
    benchmark = suite_benchmark(cfg.suite.name)
    task = benchmark.load_suite(cfg.suite.name)[0]
    policy = build_policy(cfg)
    env = Recording(open_env(benchmark, task, cameras_for(cfg), cfg))
    try:
        here = [run_episode(env, policy, episode_context(cfg, task, i), n) for i, n in STEPS]
        records = ServedRecords(cfg)
        records.start(policy.describe(), {})
        with vla_eval.serve_background(HarnessServer(cfg, policy, records)) as handle:
            remote = RemotePolicy(handle.url, 60.0)
            there = [run_episode(env, remote, episode_context(cfg, task, i), n) for i, n in STEPS]
            _wait_for(lambda: len(episode_records(tmp_path / RUN)) == 2, "the server's records of both episodes")
    finally:
        env.env.close()
    in_process, served = env.actions[:2], env.actions[2:]
    for mine, theirs, (_, n) in zip(in_process, served, STEPS):
        assert len(mine) == len(theirs) == n
        np.testing.assert_array_equal(np.stack(mine), np.stack(theirs))
    assert [(r.success, r.steps) for r in here] == [(r.success, r.steps) for r in there]
    assert [len(r.queries) for r in there] == [n for _, n in STEPS]  # one round trip per step
    recorded = {r["init_index"]: r for r in episode_records(tmp_path / RUN)}
    for mine in here:
        theirs = recorded[mine.init_index]
        assert (theirs["success"], theirs["steps"]) == (mine.success, mine.steps)
        assert [q["prefill_tokens"] for q in theirs["queries"]] == [q["prefill_tokens"] for q in mine.queries]
