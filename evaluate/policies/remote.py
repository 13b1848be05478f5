"""`policy=remote policy.url=ws://HOST:PORT`: the harness's episodes, run here, against a policy served over vla-eval's
model-server protocol: ours (`python -m evaluate.serve`) or anyone's vla-eval model server.

The client speaks as vla-eval's LIBERO benchmark does (evaluate/serve/wire.py): EPISODE_START with the task's name,
suite, task_id and episode_idx (= the init state), then one observation per env step, each answered by one action (a
chunking server answers from its chunk), and EPISODE_END with the outcome (`metrics.success`, `steps`), so a server
that records episodes, ours among them, records each with its result. It honours what the server's HELLO asks: the
wrist camera, the state's axis-angle convention (`quat_no_antipodal`); the env stays the harness's (seeded per
episode, docs/protocol.md), and an action that server declares absolute is refused. Actions are executed as they
come (float64 from our server), so an episode through our server equals the same episode in-process.

The policy records success (in the run directory, as any policy) and each step's round trip (`latency_ms.total`:
observation out, action back); no FLOPs or kept tokens: the server runs the model, and ours records those itself.
Each `num_envs` worker is a session of its own; a server started with `max_batch_size` > 1 batches them. An
unreachable server, one that dies, refuses an observation or stays silent longer than `policy.timeout_s` ends the run
with one `error:` line; finished episodes stay, and re-running the command resumes.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from functools import lru_cache
from urllib.parse import urlparse


from evaluate.errors import ConfigError
from evaluate.envs.base import PRIMARY, WRIST, Observation
from evaluate.policy import EpisodeContext, PolicyOutput

log = logging.getLogger(__name__)
WAIT_STEPS = 10  # the harness's no-op steps before the policy acts (evaluate/envs/libero.py), vla-eval's default
HONOURED = {"send_wrist_image", "send_state", "quat_no_antipodal"}  # what the client does as a server asks


class RemoteServerError(ConfigError):
    """The policy server cannot be reached or failed: one line for the user (the run stops, its episodes kept)."""


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise ConfigError(f"policy.url={url} is not a WebSocket address: give ws://HOST:PORT (python -m evaluate.serve "
                          "prints it)")
    try:
        parsed.port
    except ValueError:
        raise ConfigError(f"policy.url={url} has no valid port: give ws://HOST:PORT") from None


@lru_cache(maxsize=None)
def server_info(url: str, timeout_s: float) -> dict:
    """The server's HELLO reply (one short connection); RemoteServerError when no server answers."""
    import anyio
    from vla_eval.connection import Connection

    async def hello() -> dict:
        connection = Connection(url, timeout=timeout_s, max_retries=1)
        try:
            await connection.connect()
            return connection.server_info
        finally:
            await connection.close()

    try:
        return anyio.run(hello)
    except Exception as e:
        cause = e.__cause__ or e
        raise RemoteServerError(f"no policy server answers at {url} ({type(cause).__name__}: {cause}); start one "
                                "(python -m evaluate.serve ... port=PORT) or correct policy.url") from None


def check_remote(cfg) -> None:
    """The URL, the server's answer and what it declares, before the run starts."""
    try:
        import vla_eval  # noqa: F401
    except ImportError:
        raise ConfigError("policy=remote needs vla-eval: pip install -e '.[serve]' (scripts/setup.sh installs it)") \
            from None
    _check_url(cfg.policy.url)
    if not cfg.policy.timeout_s > 0:
        raise ConfigError(f"policy.timeout_s={cfg.policy.timeout_s} must be positive (seconds to wait for a reply)")
    info = server_info(cfg.policy.url, float(cfg.policy.timeout_s))
    asked = info.get("observation_params") or {}
    if asked.get("absolute_action"):
        raise ConfigError(f"the server at {cfg.policy.url} answers absolute actions (absolute_action); the harness "
                          "executes delta actions")
    problems = _spec_problems(info, remote_cameras(cfg))
    if problems:
        raise ConfigError(f"the server at {cfg.policy.url} does not speak LIBERO's actions and observations: "
                          f"{'; '.join(problems)}")
    expected = {"max_steps": cfg.suite.max_steps, "num_steps_wait": WAIT_STEPS}
    for key, value in asked.items():
        if key in expected and value != expected[key]:
            log.warning("the server asks %s=%s; this run uses %s (docs/serving.md)", key, value, expected[key])
        elif key not in HONOURED and key not in expected and key != "env_seed":
            log.warning("the server asks %s=%s, which policy=remote does not do", key, value)


def _spec_problems(info: dict, cameras: tuple[str, ...]) -> list[str]:
    """vla-eval's own spec check of the server's declaration against what this client sends and executes."""
    from vla_eval.specs import DimSpec, check_specs

    from evaluate.serve.wire import specs

    action, observation = specs(cameras)
    declared = [{k: DimSpec.from_dict(v) for k, v in (info.get(key) or {}).items()}
                for key in ("action_spec", "observation_spec")]
    return check_specs(declared[0], action, declared[1], observation)


def remote_cameras(cfg) -> tuple[str, ...]:
    """The agent view always (vla-eval's LIBERO sends it), the wrist camera when the server asks for it."""
    asked = server_info(cfg.policy.url, float(cfg.policy.timeout_s)).get("observation_params") or {}
    return (PRIMARY, WRIST) if asked.get("send_wrist_image") else (PRIMARY,)


def _portal():
    """A BlockingPortal: an event loop on a daemon thread, to drive vla-eval's async Connection from the synchronous
    rollout (a daemon, so that a process ending without closing it never waits for it)."""
    import anyio
    from anyio.from_thread import BlockingPortal

    started: queue.Queue = queue.Queue()

    async def hold() -> None:
        async with BlockingPortal() as portal:
            started.put(portal)
            await portal.sleep_until_stopped()

    threading.Thread(target=anyio.run, args=(hold,), daemon=True, name="remote-policy").start()
    return started.get()


class RemotePolicy:
    name = "remote"

    def __init__(self, url: str, timeout_s: float):
        self.url, self.timeout_s = url, timeout_s
        self.info = server_info(url, timeout_s)
        self.antipodal = not (self.info.get("observation_params") or {}).get("quat_no_antipodal", False)
        self.connection = self.portal = None
        self.episode: EpisodeContext | None = None  # the episode the server has been told of and not its end

    def _call(self, what: str, method: str, *args):
        """`method` of vla-eval's Connection (opened at the first call), its failures as one RemoteServerError."""
        import websockets

        try:
            if self.connection is None:
                from vla_eval.connection import Connection

                self.portal = self.portal or _portal()
                self.connection = Connection(self.url, timeout=self.timeout_s, max_retries=1)
                self.portal.call(self.connection.connect)
            return self.portal.call(getattr(self.connection, method), *args)
        except (OSError, TimeoutError, RuntimeError, websockets.exceptions.ConnectionClosed) as e:
            self.connection = None  # closed, or in an unknown state: the next episode reconnects
            if isinstance(e, TimeoutError):
                problem = f"sent no reply within policy.timeout_s={self.timeout_s:g}"
            elif isinstance(e, RuntimeError) and str(e).startswith("Server error"):
                problem = f"refused it ({str(e).removeprefix('Server error: ')})"
            else:
                problem = f"is gone ({type(e).__name__}: {e})"
            raise RemoteServerError(f"{what}: the policy server at {self.url} {problem}; finished episodes are saved: "
                                    "restart the server and re-run the same command to resume") from None

    def reset(self, ctx: EpisodeContext) -> None:
        if self.episode is not None:  # the last episode stopped without its end (an interrupt): no result for it
            self._end({})
        task = {"name": ctx.instruction, "suite": ctx.suite, "task_id": ctx.task_id, "episode_idx": ctx.init_index}
        self._call(f"starting task {ctx.task_id} init state {ctx.init_index}", "start_episode", {"task": task})
        self.episode = ctx

    def act(self, obs: Observation) -> PolicyOutput:
        from evaluate.serve.wire import actions_from_reply, observation_to_wire

        episode = self.episode
        what = f"task {episode.task_id} init state {episode.init_index}"
        start = time.perf_counter()
        reply = self._call(what, "act", observation_to_wire(obs, self.antipodal))
        round_trip = 1e3 * (time.perf_counter() - start)
        try:
            actions = actions_from_reply(reply)
        except ValueError as e:
            raise RemoteServerError(f"{what}: the policy server at {self.url} answered no action: {e}") from None
        return PolicyOutput(actions=actions, info={"latency_ms": {"total": round(round_trip, 3)}})

    def end_episode(self, record) -> None:
        """The rollout's last word on an episode (evaluate/rollout.py): the server hears its outcome."""
        self._end({"metrics": {"success": bool(record.success)}, "steps": int(record.steps),
                   "elapsed_sec": float(record.wall_time_s), "status": record.status, "error": record.error})

    def _end(self, result: dict) -> None:
        episode, self.episode = self.episode, None
        try:
            self._call(f"ending task {episode.task_id} init state {episode.init_index}", "end_episode", result)
        except RemoteServerError as e:  # the episode is finished and recorded here; the next start will tell
            log.warning("%s", e)

    def describe(self) -> dict:
        asked = self.info.get("observation_params") or {}
        return {"policy": self.name, "url": self.url,
                "server": {k: self.info.get(k) for k in ("model_server", "harness_version", "observation_params",
                                                         "action_spec", "observation_spec")},
                "note": "the server runs the model and pruner (its own records hold FLOPs and kept tokens); the "
                        f"env is the harness's, seeded per episode (the server asked env_seed={asked.get('env_seed')})"}


def build_remote(cfg) -> RemotePolicy:
    return RemotePolicy(cfg.policy.url, float(cfg.policy.timeout_s))
