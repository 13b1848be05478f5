"""HarnessServer: a policy of the harness (any model with any pruner, or noop) behind vla-eval's PredictModelServer.

A connection is a session; each session's episode runs in a policy slot of its own (`BatchedPolicy.reset_slot`), so
a pruner's per-episode state (VLA-Pruner's action history, VLA-Cache's stored tokens) is the session's, reset when its
episode starts, exactly as `num_envs` workers get theirs. With `max_batch_size` > 1 vla-eval's dispatcher hands the
observations of concurrent sessions to `predict_batch` together: one `act_batch` query.

One observation gets one action, as vla-eval's LIBERO executes them: a query's chunk (OpenVLA-OFT: 8 actions, pi0:
`replan_steps`) is kept per session and its next action answers each next observation without a query, the open-loop
chunk the harness executes in-process. Actions go out as float64 (`wire.action_reply`), so a client that executes them
as they come (our `policy=remote`) steps the simulator exactly as an in-process run does.

Mistakes of a client never stop the server: a malformed observation, or an episode start it cannot run (another suite,
no task id or init state), is answered with vla-eval's ERROR message naming the problem. An episode-start problem is
kept and told at the episode's first observation: an ERROR in reply to EPISODE_START, which the client reads no reply
to, would shift every later reply on the connection by one.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import anyio
from omegaconf import DictConfig
from vla_eval.model_servers.base import SessionContext
from vla_eval.model_servers.predict import PredictModelServer

from evaluate.envs.base import WRIST, Observation
from evaluate.policies import POLICIES
from evaluate.policy import BatchedPolicy, EpisodeContext, check_actions
from evaluate.serve.wire import SEND_PARAM, STATE_KEY, action_reply, observation_from_wire, specs
from evaluate.store import EpisodeRecord

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A client's request the server cannot answer; the ERROR reply (and the server's log, in one line) says why."""


class OneLineRequestErrors(logging.Filter):
    """vla-eval logs every failed request with its traceback; a client's mistake (RequestError) gets one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RequestError):
            record.msg, record.exc_info, record.exc_text = f"{record.msg}: {error}", None, None
        return True


@dataclass
class Episode:
    """A session's running episode: what its policy slot was reset with, and what the server records of it."""

    context: EpisodeContext | None  # None when it cannot run (`problem`)
    task: dict
    started: float = field(default_factory=time.monotonic)
    reset: bool = False  # its slot was reset (lazily, at its first query, serialised with the queries)
    problem: str | None = None  # why it cannot run: told at each observation
    actions: deque = field(default_factory=deque)  # the rest of the last query's chunk
    queries: list[dict] = field(default_factory=list)  # each query's stats (kept tokens, latency, ...)


@dataclass
class Query:
    """What predict_batch gets for one observation (the base class passes it through untouched)."""

    episode: Episode
    slot: int
    observation: Observation


class OneSlot:
    """A policy without slots (noop) as one: every session shares it, which only a stateless policy can allow."""

    def __init__(self, policy):
        self.policy = policy

    def reset_slot(self, slot: int, ctx: EpisodeContext, pruner: Any = None) -> None:
        self.policy.reset(ctx)

    def act_batch(self, queries, prepared: bool = False):
        return [self.policy.act(obs) for _, obs in queries]


class HarnessServer(PredictModelServer):
    def __init__(self, cfg: DictConfig, policy, records=None, *, max_batch_size: int = 1, max_wait_time: float = 0.01,
                 env_seed: int = 0):
        """`policy`: built from `cfg` (`evaluate.policies.build_policy`); `records`: a `ServedRecords` the ended
        episodes go to (None: not recorded); `env_seed`: the env seed asked of vla-eval's LIBERO."""
        super().__init__(max_batch_size=max_batch_size, max_wait_time=max_wait_time)
        self.cfg, self.records, self.env_seed = cfg, records, env_seed
        self.policy = policy if isinstance(policy, BatchedPolicy) else OneSlot(policy)
        self.cameras = tuple(POLICIES[cfg.policy.name].cameras(cfg))
        self.episodes: dict[str, Episode] = {}  # by session id
        self.slots: dict[str, int] = {}  # by session id, while its episode runs

    # --- what the HELLO reply declares ------------------------------------------------------------------------
    def get_observation_params(self) -> dict[str, Any]:
        return {SEND_PARAM[WRIST]: WRIST in self.cameras, SEND_PARAM[STATE_KEY]: True, "quat_no_antipodal": True,
                "env_seed": self.env_seed, "max_steps": int(self.cfg.suite.max_steps)}

    def get_action_spec(self):
        return specs(self.cameras)[0]

    def get_observation_spec(self):
        return specs(self.cameras)[1]

    # --- episodes ---------------------------------------------------------------------------------------------
    async def on_episode_start(self, config: dict[str, Any], ctx: SessionContext) -> None:
        await super().on_episode_start(config, ctx)
        if ctx.session_id in self.episodes:
            log.info("session %s started an episode before ending its last one: that one is not recorded",
                     ctx.session_id[:8])
        task = config.get("task") if isinstance(config, dict) else None
        try:
            episode = Episode(self._context(task), task)
        except RequestError as e:
            episode = Episode(None, task if isinstance(task, dict) else {}, problem=str(e))
        self.episodes[ctx.session_id] = episode
        if ctx.session_id not in self.slots:
            used = set(self.slots.values())
            self.slots[ctx.session_id] = next(slot for slot in range(len(used) + 1) if slot not in used)
        if episode.problem is None and self.records is not None:
            self.records.want(task["task_id"], task["episode_idx"])

    def _context(self, task: Any) -> EpisodeContext:
        """The episode's context from EPISODE_START's `task` (vla-eval's runner sends the task's name, suite, task_id
        and episode_idx = its init state); RequestError when it cannot run here."""
        if not isinstance(task, dict):
            raise RequestError("EPISODE_START has no 'task' map (name, suite, task_id, episode_idx)")
        for key in ("task_id", "episode_idx"):
            if not isinstance(task.get(key), int) or isinstance(task.get(key), bool) or task[key] < 0:
                raise RequestError(f"EPISODE_START's task has no '{key}' (a non-negative integer): the server records "
                                   "each episode by task id and init state")
        if not isinstance(task.get("name"), str) or not task["name"].strip():
            raise RequestError("EPISODE_START's task has no 'name' (its instruction)")
        suite = task.get("suite", self.cfg.suite.name)
        if suite != self.cfg.suite.name:
            raise RequestError(f"this server serves suite {self.cfg.suite.name} (its model's statistics), not {suite}: "
                               f"start one with suite={suite}")
        return EpisodeContext(suite, task["task_id"], task["name"], task["episode_idx"], int(self.cfg.seed))

    async def on_episode_end(self, result: dict[str, Any], ctx: SessionContext) -> None:
        await super().on_episode_end(result, ctx)
        episode = self.episodes.pop(ctx.session_id, None)
        self.slots.pop(ctx.session_id, None)
        if episode is None or episode.problem is not None:
            return
        metrics = result.get("metrics") if isinstance(result, dict) else None
        success = metrics.get("success") if isinstance(metrics, dict) else None
        if not isinstance(success, bool):
            log.info("episode of task %s init state %s ended without a result (the client failed or disconnected): "
                     "not recorded", episode.task.get("task_id"), episode.task.get("episode_idx"))
            return
        context, steps, error = episode.context, result.get("steps"), result.get("error")
        record = EpisodeRecord(
            suite=context.suite, task_id=context.task_id, task=context.instruction, init_index=context.init_index,
            success=success, steps=steps if isinstance(steps, int) else len(episode.queries),
            wall_time_s=round(time.monotonic() - episode.started, 3),
            status="env_error" if result.get("status") == "env_error" else "ok",
            error=None if error is None else str(error), queries=episode.queries)
        if self.records is not None:
            await anyio.to_thread.run_sync(self.records.add, record)

    # --- observations -----------------------------------------------------------------------------------------
    async def on_observation(self, obs: dict[str, Any], ctx: SessionContext) -> None:
        episode = self.episodes.get(ctx.session_id)
        if episode is None:
            raise RequestError("no episode is running on this connection: send EPISODE_START first")
        if episode.problem is not None:
            raise RequestError(episode.problem)
        try:
            observation = observation_from_wire(obs, self.cameras)
        except ValueError as e:
            raise RequestError(str(e)) from None
        if episode.actions:  # the rest of the chunk, executed open loop as in-process
            await ctx.send_action(action_reply(episode.actions.popleft()))
            return
        await super().on_observation(Query(episode, self.slots[ctx.session_id], observation), ctx)

    def predict_batch(self, obs_batch: Sequence[Query], ctx_batch: Sequence[SessionContext]) -> list[dict]:
        """One policy query for the waiting sessions (a worker thread; vla-eval runs one at a time)."""
        for query in obs_batch:
            if not query.episode.reset:
                self.policy.reset_slot(query.slot, query.episode.context)
                query.episode.reset = True
        outputs = self.policy.act_batch([(query.slot, query.observation) for query in obs_batch])
        replies = []
        for query, output in zip(obs_batch, outputs):
            context = query.episode.context
            actions = check_actions(output, context.task_id, context.init_index).actions
            query.episode.actions.extend(actions[1:])
            query.episode.queries.append(output.info)
            replies.append(action_reply(actions[0]))
        return replies
