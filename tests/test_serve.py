"""Both sides of vla-eval's model-server protocol without a simulator (issue 39): the wire format against vla-eval's
own conventions, our server's answers to malformed requests (an ERROR naming the problem; it keeps serving), the
episodes it records, `policy=remote` against it (and against no server, or one that dies), and the serve command's
one-line errors before any weights load. The simulator runs in tests/test_serve_sim.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import anyio
import numpy as np
import pytest



def require_vla_eval():
    """vla-eval, the serve extra: CI installs it (scripts/setup.sh), so there its absence fails; elsewhere the tests
    skip, saying why."""
    try:
        import vla_eval
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        pytest.skip("vla-eval is not installed: pip install -e '.[serve]'", allow_module_level=True)
    return vla_eval


vla_eval = require_vla_eval()

from vla_eval.connection import Connection  # noqa: E402
from vla_eval.rotation import quat_to_axisangle  # noqa: E402

from evaluate.config import ConfigError  # noqa: E402
from evaluate.envs.base import PRIMARY, Observation  # noqa: E402
from evaluate.policies import POLICIES, build_policy  # noqa: E402
from evaluate.policies.remote import RemotePolicy, RemoteServerError, check_remote, server_info  # noqa: E402
from evaluate.policy import EpisodeContext  # noqa: E402
from evaluate.serve.__main__ import checked_config  # noqa: E402
from evaluate.serve.records import ServedRecords  # noqa: E402
from evaluate.serve.server import HarnessServer  # noqa: E402
from evaluate.serve.wire import actions_from_reply, antipodal_state, observation_from_wire  # noqa: E402
from evaluate.store import EpisodeRecord  # noqa: E402
from tests.conftest import REPO, composed, episode_records, noop_run_dir, run_summary  # noqa: E402

IMAGE = np.zeros((256, 256, 3), dtype=np.uint8)
OBSERVATION = {"images": {"agentview": IMAGE}, "task_description": "pick it up", "states": np.zeros(8)}
TASK = {"name": "pick it up", "suite": "libero_object", "task_id": 0, "episode_idx": 3}


# ------------------------------------------------------------------------------------------------- the wire


def test_the_antipodal_state_is_vla_evals_axis_angle():
    """From the harness's state (robosuite's axis-angle, angle in [0, 2 pi]) to what vla-eval's LIBERO sends by
    default, for quaternions on both sides of w = 0."""
    from evaluate.envs.libero_conventions import robot_state

    rng = np.random.default_rng(0)
    for quat in [*rng.normal(size=(200, 4)), [0.99, 0.1, 0.0, -0.00015]]:
        quat = np.asarray(quat) / np.linalg.norm(quat)
        state = robot_state(np.zeros(3), quat, np.zeros(2))
        np.testing.assert_allclose(antipodal_state(state)[3:6], quat_to_axisangle(quat), atol=2e-6)
        assert (np.dot(antipodal_state(state)[3:6], state[3:6]) < 0) == (quat[3] < 0)  # the axis turned round


@pytest.mark.parametrize("payload, problem", [
    ("not a map", "an observation must be a map"),
    ({**OBSERVATION, "images": None}, "no 'images' map"),
    ({**OBSERVATION, "images": {}}, "no image 'agentview'"),
    ({**OBSERVATION, "images": {"agentview": IMAGE.astype(np.float32)}}, "image 'agentview' must be HxWx3 uint8"),
    ({**OBSERVATION, "states": np.zeros(7)}, "'states' must be 8 finite numbers"),
    ({**OBSERVATION, "states": np.full(8, np.nan)}, "'states' must be 8 finite numbers"),
    ({k: v for k, v in OBSERVATION.items() if k != "states"}, "send_state=true"),
    ({**OBSERVATION, "task_description": ""}, "no 'task_description'"),
])
def test_a_malformed_observation_is_named(payload, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        observation_from_wire(payload, (PRIMARY,))


def test_replies_hold_one_action_or_a_chunk():
    assert actions_from_reply({"actions": np.zeros(7, np.float32)}).shape == (1, 7)
    assert actions_from_reply({"action": np.zeros((8, 7))}).dtype == np.float64
    for bad in ({"error": "x"}, {"actions": np.zeros(6)}, {"actions": np.zeros((0, 7))}):
        with pytest.raises(ValueError):
            actions_from_reply(bad)


# ------------------------------------------------------------------------------- our server, a noop policy


@pytest.fixture
def noop_server(tmp_path):
    """A noop policy served in this process, recording to tmp_path (as `python -m evaluate.serve policy=noop`)."""
    cfg = composed("policy=noop", "suite.max_steps=3", f"output_root={tmp_path}")
    records = ServedRecords(cfg)
    policy = build_policy(cfg)
    records.start(policy.describe(), {})
    with vla_eval.serve_background(HarnessServer(cfg, policy, records)) as handle:
        yield handle, noop_run_dir(tmp_path, "libero_object")


def talk(url: str, exchange) -> list:
    """Run `exchange(connection)` (a coroutine function returning a list) on a fresh connection."""
    async def run():
        async with Connection(url, timeout=10, max_retries=1) as connection:
            return await exchange(connection)
    return anyio.run(run)


async def act_or_error(connection, observation) -> str:
    try:
        return str(await connection.act(observation))
    except RuntimeError as e:
        return str(e)


def test_our_server_answers_malformed_requests_and_keeps_serving(noop_server):
    handle, run_dir = noop_server

    async def exchange(c):
        replies = [await act_or_error(c, OBSERVATION)]  # before any episode
        await c.start_episode({"task": {**TASK, "suite": "libero_goal"}})
        replies.append(await act_or_error(c, OBSERVATION))
        await c.start_episode({"task": {"name": "x", "task_id": 0}})
        replies.append(await act_or_error(c, OBSERVATION))
        await c.start_episode({"task": TASK})
        replies.append(await act_or_error(c, {**OBSERVATION, "states": None}))
        replies += [await act_or_error(c, OBSERVATION) for _ in range(2)]
        await c.end_episode({"metrics": {"success": True}, "steps": 2, "elapsed_sec": 0.1})
        return replies

    replies = talk(handle.url, exchange)
    assert "no episode is running on this connection: send EPISODE_START first" in replies[0]
    assert "this server serves suite libero_object (its model's statistics), not libero_goal" in replies[1]
    assert "EPISODE_START's task has no 'episode_idx'" in replies[2]
    assert "the observation has no 'states'" in replies[3]
    assert all("'action': array([ 0.,  0.,  0.,  0.,  0.,  0., -1.])" in r for r in replies[4:])
    with urllib.request.urlopen(handle.url.replace("ws://", "http://") + "/health") as health:
        assert json.load(health) == {"status": "ok"}
    # a frame that is no message at all: vla-eval closes that connection; the server serves the next one
    import websockets.sync.client

    with websockets.sync.client.connect(handle.url) as raw:
        raw.send(b"\xc1 not msgpack")
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            raw.recv(timeout=10)
    assert "'action'" in talk(handle.url, lambda c: _one_episode(c, {**TASK, "episode_idx": 4}))[0]

    records = {r["init_index"]: r for r in episode_records(run_dir)}
    assert sorted(records) == [3, 4]  # only the episodes that ran and ended with a result
    assert records[3]["success"] is True and records[3]["steps"] == 2 and len(records[3]["queries"]) == 2
    summary = run_summary(run_dir)
    assert summary["complete"] and summary["served"] == {} and summary["successes"] == 1
    identity = json.loads((run_dir / "run_identity.json").read_text())
    assert identity["served"] is True and identity["policy"]["name"] == "noop"


async def _one_episode(c, task) -> list:
    await c.start_episode({"task": task})
    reply = await act_or_error(c, OBSERVATION)
    await c.end_episode({"metrics": {"success": False}, "steps": 3})
    await c.close()  # the server records the episode before it reads the close
    await anyio.sleep(0.5)
    return [reply]


def test_an_episode_the_records_hold_is_not_recorded_twice(noop_server, caplog):
    handle, run_dir = noop_server
    talk(handle.url, lambda c: _one_episode(c, TASK))
    talk(handle.url, lambda c: _one_episode(c, TASK))
    assert len(episode_records(run_dir)) == 1
    assert "holds task 0 init state 3 already: this episode is not recorded again" in caplog.text


# ------------------------------------------------------------------------------------ policy=remote, no sim


def test_the_remote_policy_runs_episodes_and_reports_their_end(noop_server):
    handle, run_dir = noop_server
    policy = RemotePolicy(handle.url, 10.0)
    assert policy.describe()["server"]["model_server"] == "HarnessServer"
    observation = Observation({PRIMARY: IMAGE}, np.zeros(8), "pick it up")
    for init in (0, 1):
        policy.reset(EpisodeContext("libero_object", 0, "pick it up", init, 7))
        outputs = [policy.act(observation) for _ in range(3)]
        assert all(o.actions.shape == (1, 7) and o.info["latency_ms"]["total"] > 0 for o in outputs)
        policy.end_episode(EpisodeRecord("libero_object", 0, "pick it up", init, init == 1, 3, 0.5))
    policy.reset(EpisodeContext("libero_object", 0, "pick it up", 2, 7))  # interrupted: ends without a result
    policy.reset(EpisodeContext("libero_object", 0, "pick it up", 5, 7))
    policy.end_episode(EpisodeRecord("libero_object", 0, "pick it up", 5, False, 0, 0.1))
    _wait(lambda: len(episode_records(run_dir)) == 3)
    assert {r["init_index"]: r["success"] for r in episode_records(run_dir)} == {0: False, 1: True, 5: False}


def _wait(condition, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_server_that_dies_or_refuses_is_one_line(noop_server):
    handle, _ = noop_server
    policy = RemotePolicy(handle.url, 10.0)
    policy.reset(EpisodeContext("libero_goal", 0, "pick it up", 0, 7))
    with pytest.raises(RemoteServerError, match="refused it .*serves suite libero_object") as refused:
        policy.act(Observation({PRIMARY: IMAGE}, np.zeros(8), "pick it up"))
    policy.reset(EpisodeContext("libero_object", 0, "pick it up", 0, 7))
    handle.close()
    with pytest.raises(RemoteServerError, match=f"task 0 init state 0: the policy server at {handle.url} is gone") \
            as gone:
        policy.act(Observation({PRIMARY: IMAGE}, np.zeros(8), "pick it up"))
    for error in (refused, gone):
        assert "\n" not in str(error.value) and "re-run the same command to resume" in str(error.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_runs_are_checked_before_they_start(noop_server, tmp_path):
    handle, _ = noop_server
    url = f"ws://127.0.0.1:{_free_port()}"
    cases = {f"policy.url={url}": f"no policy server answers at {url} (ConnectionRefusedError",
             "policy.url=http://localhost:8000": "is not a WebSocket address",
             "policy.url=ws://localhost:port": "has no valid port",
             "policy.timeout_s=0": "policy.timeout_s=0.0 must be positive"}
    for override, message in cases.items():
        overrides = [f"policy.url={handle.url}", override] if override.startswith("policy.timeout") else [override]
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            check_remote(composed("policy=remote", *overrides))
    with pytest.raises(ConfigError, match="policy=remote runs no model and no pruner, so keep=0.5"):
        from evaluate.config import validate

        validate(composed("policy=remote", f"policy.url={handle.url}", "keep=0.5"), POLICIES)
    check_remote(composed("policy=remote", f"policy.url={handle.url}"))
    assert server_info(handle.url, 300.0)["observation_params"]["quat_no_antipodal"] is True


# ----------------------------------------------------------------------------- python -m evaluate.serve


@pytest.mark.parametrize("args, message", [
    (["port=abc"], "port=abc"),
    (["port=70000"], "port=70000 must be in 0..65535"),
    (["max_batch_size=0"], "max_batch_size=0 must be at least 1"),
    (["-m", "keep=0.5,0.25"], "-m: python -m evaluate.serve takes key=value overrides only"),
    (["policy=scripted"], "policy=scripted cannot be served: the scripted expert reads the live simulator"),
    (["policy=noop", "episodes_per_task=5"], "episodes_per_task=5: the client chooses that"),
    (["model=nope"], "unknown model 'nope'"),
    (["policy=noop", "keep=0.5"], "policy=noop runs no model and no pruner"),
])
def test_the_serve_command_refuses_bad_settings_before_loading(args, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        checked_config([*args, f"output_root={tmp_path}"])


def test_a_server_that_cannot_listen_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "evaluate.serve", "policy=noop", f"port={port}",
                                 f"output_root={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port} (")
    assert not any(tmp_path.iterdir())  # nothing claimed


# ------------------------------------------------------------------------ sessions, a pruner with a history


def test_sessions_keep_their_own_pruner_and_share_batches(tmp_path):
    """Two clients at once (two init states of one task) against the tiny OpenVLA-OFT with VLA-Pruner, whose action
    history is per episode, batched by vla-eval's dispatcher: each gets, chunk for chunk, what its episode alone gets
    from a policy of its own."""
    from evaluate.serve.wire import observation_to_wire
    from tests.test_policy_batch import INSTRUCTIONS, observation

    cfg = composed("model=openvla_oft_tiny", f"model.checkpoint={tmp_path / 'tiny'}", "suite=libero_spatial",
                   "pruner=vla", "pruner.window=2", "keep=0.25", f"output_root={tmp_path / 'runs'}")
    served, alone = build_policy(cfg), build_policy(cfg)
    steps = 24  # three 8-action chunks
    sent = [[observation(100 * s + k, INSTRUCTIONS[0]) for k in range(steps)] for s in (0, 1)]
    tasks = [{"name": INSTRUCTIONS[0], "suite": "libero_spatial", "task_id": 0, "episode_idx": s} for s in (0, 1)]
    records = ServedRecords(cfg)
    records.start(served.describe(), {})
    answered = [None, None]

    async def client(s: int, url: str) -> None:
        async with Connection(url, timeout=60, max_retries=1) as c:
            await c.start_episode({"task": tasks[s]})
            answered[s] = [actions_from_reply(await c.act(observation_to_wire(o, False)))[0] for o in sent[s]]
            await c.end_episode({"metrics": {"success": False}, "steps": steps})

    async def both(url: str) -> None:
        async with anyio.create_task_group() as group:
            for s in (0, 1):
                group.start_soon(client, s, url)

    # vla-eval dispatches the first query alone and then waits up to max_wait_time for a full batch: long enough for
    # the other session's query on a loaded 2-core machine
    with vla_eval.serve_background(HarnessServer(cfg, served, records, max_batch_size=2, max_wait_time=5.0)) as h:
        anyio.run(both, h.url)
        _wait(lambda: len(episode_records(records.store.run_dir)) == 2)
    recorded = {r["init_index"]: r["queries"] for r in episode_records(records.store.run_dir)}
    for s in (0, 1):
        alone.reset_slot(0, EpisodeContext("libero_spatial", 0, INSTRUCTIONS[0], s, 7))
        own = [alone.act_batch([(0, sent[s][k])])[0] for k in range(0, steps, 8)]
        np.testing.assert_allclose(np.stack(answered[s]), np.concatenate([o.actions for o in own]), atol=1e-5, rtol=0)
        assert [[p["kept_mask"] for p in q["pruning"]] for q in recorded[s]] == \
            [[p["kept_mask"] for p in o.info["pruning"]] for o in own]
        assert [q["warmup"] for q in recorded[s]] == [True, True, False]  # its own history filled from empty
    assert any(q["batch_size"] == 2 for queries in recorded.values() for q in queries)  # one prompt: one pass
