"""Parallel rollouts (`num_envs=N`, N > 1): N spawned simulator workers, each running whole episodes with
`run_episode`, exactly as the sequential path runs them.

Where the policy runs: a policy that runs beside the simulator (`PolicyEntry.beside_simulator`: weight-free or
privileged, e.g. the scripted expert that reads the live env) is built in every worker. Any other policy stays
in the main process, loaded once: a worker's episode reaches it through `RemotePolicy`, and the main loop
answers all workers waiting at that moment with ONE batched query (`BatchedPolicy.act_batch`), without waiting
for the ones still stepping: the policy computes while the others simulate, and batches form by themselves
whenever the policy is the bottleneck (with two workers they settle into turns, one stepping while the other is
answered). A worker is a policy slot: the policy keeps per-episode state (a pruner's history) per slot.

Cores: each worker renders and runs torch on one thread (N workers fill N cores; Mesa's llvmpipe and torch
would otherwise start a thread per core in every worker and the processes would fight over the cores), and the
main process's torch gets the cores the workers leave, at least one. LP_NUM_THREADS set by the user wins.

Records are written by the main process when a worker reports an episode, through the same store, locks and
summary as the sequential path. A worker that dies (a MuJoCo segfault) or stays silent for `worker_timeout_s`
while it has work costs its episode one `env_error` record and is replaced. A worker that raises (a bug, not
the simulator) stops the run with its traceback. Workers ignore SIGINT/SIGTERM: the main process checks the
interrupt guard and stops them itself, so no finished episode is lost and no interrupted one is recorded.
"""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import logging
import os
from functools import partial
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from importlib import import_module
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from evaluate.errors import ConfigError
from evaluate.envs.base import Observation, Task
from evaluate.policies import POLICIES, build_policy, cameras_for
from evaluate.policy import BatchedPolicy, EpisodeContext, PolicyOutput, TaskNotSupported, check_actions
from evaluate.rollout import episode_context, open_env, run_episode
from evaluate.store import EpisodeRecord

POLL_S = 0.2  # how often the main loop looks at the interrupt guard, dead workers and timeouts
HEARTBEAT_S = 1.0  # a worker busy in the simulator says it is alive this often (checked after every sim call)
STOP_GRACE_S = 10.0  # a worker asked to stop after its last episode gets this long before it is killed
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


# ------------------------------------------------------------------------------------------ the worker side


class RemotePolicy:
    """The main process's policy as a worker's episode sees it: reset and act are requests over the pipe. The
    observation goes through the policy's weight-free `prepare` here, in parallel with the other workers."""

    name = "remote"

    def __init__(self, conn: Connection, prepare: Callable[[Observation], Observation] | None = None):
        self.conn, self.prepare = conn, prepare

    def reset(self, ctx: EpisodeContext) -> None:
        self._ask("reset", dataclasses.replace(ctx, env=None))  # the live simulator stays in this process

    def act(self, obs: Observation) -> PolicyOutput:
        if self.prepare is not None:
            return self._ask("act", self.prepare(obs))
        return self._ask("act", Observation(obs.images, obs.state, obs.instruction))  # learned policies read no raw

    def _ask(self, kind: str, payload):
        self.conn.send((kind, payload))
        status, value = self.conn.recv()
        if status == "error":
            raise value
        return value

    def describe(self) -> dict:
        return {"policy": self.name}


class Heartbeat:
    """Tells the main process this worker is alive, at most every HEARTBEAT_S (a hung simulator stops it)."""

    def __init__(self, conn: Connection):
        self.conn, self.last = conn, 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last >= HEARTBEAT_S:
            self.conn.send(("alive", None))
            self.last = time.monotonic()


def _die_with_parent() -> None:
    """A worker ends at once when the main process does, even by SIGKILL: the kernel kills it then (Linux's
    PR_SET_PDEATHSIG), instead of it importing, building its env and stepping on until it next talks to the main
    process. Elsewhere it notices at its next message, as before."""
    parent = multiprocessing.parent_process()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if parent is None or os.getppid() != parent.pid:  # the main process died before the call above
        os._exit(1)


def _worker_main(conn: Connection, benchmark_module: str, cfg: dict, video_dir: str | None) -> None:
    """A worker process: receive (task, init index), run the episode, send its record; None or EOF ends it."""
    _die_with_parent()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    os.environ.setdefault("LP_NUM_THREADS", "1")  # read when the env's GL context is made, below
    import torch  # here, as in `run`: a noop or scripted run never needs it

    torch.set_num_threads(1)
    env = env_task = None
    beat = Heartbeat(conn)
    try:
        config = OmegaConf.create(cfg)
        # the simulator's warnings (MuJoCo's) reach the run's log through file handlers, which Hydra opens only in
        # the main process: a worker's go beside it (the file appears with the first one)
        logging.getLogger().addHandler(logging.FileHandler(Path(config.output_dir) / "simulator_workers.log",
                                                           delay=True))
        benchmark = import_module(benchmark_module).BENCHMARK
        cameras = cameras_for(config)
        entry = POLICIES[config.policy.name]
        policy = (build_policy(config) if entry.beside_simulator
                  else RemotePolicy(conn, None if entry.prepare is None else partial(entry.prepare, config)))
        demos = None
        if config.record_demos:  # buffered here, written by the main process (one writer per file)
            from evaluate.demos import DemoRecorder

            demos = DemoRecorder(None)
        while (job := _receive(conn)) is not None:
            task, init_index = job
            beat()
            if task != env_task:  # one env per task, as the sequential path (and the official evaluation) does
                if env is not None:
                    env.close()
                env, env_task = open_env(benchmark, task, cameras, config), task
                beat.last = 0.0
                beat()
            ctx = episode_context(config, task, init_index)
            record = run_episode(env, policy, ctx, config.suite.max_steps, video_dir and Path(video_dir), demos,
                                 check_interrupt=beat)
            if record.status == "env_error":  # a failed simulator may be left in a bad state
                env.close()
                env = env_task = None
            conn.send(("record", (record, None if demos is None else demos.take())))
    except EOFError:  # the main process is gone
        pass
    except ConfigError as e:  # a failure meant for the user (policy=remote: its server gone): its one line
        conn.send(("failed", e))
    except BaseException:
        try:
            conn.send(("crash", traceback.format_exc()))
        except OSError:
            pass
    finally:
        if env is not None:
            env.close()


def _receive(conn: Connection):
    try:
        return conn.recv()
    except EOFError:
        return None


# -------------------------------------------------------------------------------------------- the main side


class WorkerFailed(RuntimeError):
    """A worker raised (not a simulator error): the run stops with the worker's traceback."""


@dataclass
class _Worker:
    slot: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    job: tuple[Task, int] | None = None
    phase: str = "idle"  # idle | starting (env, settle) | stepping (will ask or report soon) | waiting (has asked)
    query: Observation | None = None
    heard: float = 0.0  # time.monotonic() of its last message (or of its job)


class WorkerPool:
    """N simulator workers and the loop that feeds them episodes and answers their policy queries."""

    def __init__(self, cfg: DictConfig, benchmark_module: str, policy,
                 on_record: Callable[[EpisodeRecord], None], check_interrupt: Callable[[], None],
                 on_demo: Callable[[dict], None] | None = None):
        self.cfg, self.policy, self.on_demo = cfg, policy, on_demo
        self.prepared = POLICIES[cfg.policy.name].prepare is not None  # the workers prepare the observations
        self.on_record, self.check_interrupt = on_record, check_interrupt
        self.timeout_s = float(cfg.worker_timeout_s)
        video_dir = str(Path(cfg.output_dir) / "videos") if cfg.video else None
        self._args = (benchmark_module, OmegaConf.to_container(cfg, resolve=True), video_dir)
        self._context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked EGL/CUDA state
        self.workers: list[_Worker] = []

    def run(self, jobs: Sequence[tuple[Task, int]]) -> None:
        """Run every (task, init index) of `jobs`; returns when all are recorded."""
        import torch

        pending = deque(jobs)
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - int(self.cfg.num_envs)))
        try:
            self.workers = [self._spawn(slot) for slot in range(min(int(self.cfg.num_envs), len(pending)))]
            for worker in self.workers:
                self._assign(worker, pending)
            while any(w.job for w in self.workers):
                self.check_interrupt()
                self._poll(pending)
                self._answer_queries()
        finally:
            self._stop_all()
            torch.set_num_threads(threads)

    # --- workers ----------------------------------------------------------------------------------------
    def _spawn(self, slot: int) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, *self._args), daemon=True,
                                        name=f"simulator-{slot}")
        process.start()
        child.close()
        return _Worker(slot, process, parent)

    def _assign(self, worker: _Worker, pending: deque) -> None:
        worker.job = pending.popleft() if pending else None
        worker.phase, worker.query, worker.heard = ("starting" if worker.job else "idle"), None, time.monotonic()
        if worker.job is not None:
            worker.conn.send(worker.job)

    def _replace(self, worker: _Worker, error: str, pending: deque) -> None:
        """Record the worker's episode as an env_error, kill it, and start a fresh worker in its slot."""
        self.check_interrupt()  # a Ctrl-C on the terminal reaches a worker still starting: the stop comes first
        task, init_index = worker.job
        self.on_record(EpisodeRecord(suite=self.cfg.suite.name, task_id=task.task_id, task=task.instruction,
                                     init_index=init_index, success=False, steps=0,
                                     wall_time_s=round(time.monotonic() - worker.heard, 3), status="env_error",
                                     error=error))
        _kill(worker)
        fresh = self._spawn(worker.slot)
        self.workers[self.workers.index(worker)] = fresh
        self._assign(fresh, pending)

    def _stop_all(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            if worker.job is None:  # finished its work: let it close its env
                worker.process.join(max(0.0, deadline - time.monotonic()))
            _kill(worker)

    # --- messages ---------------------------------------------------------------------------------------
    def _poll(self, pending: deque) -> None:
        busy = [w for w in self.workers if w.job]
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=POLL_S))
        for worker in busy:
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except EOFError:
                    self._replace(worker, _death(worker), pending)
                    continue
                worker.heard = time.monotonic()
                self._handle(worker, message, pending)
            elif worker.process.sentinel in ready:
                self._replace(worker, _death(worker), pending)
            elif worker.phase != "waiting" and time.monotonic() - worker.heard > self.timeout_s:
                self._replace(worker, f"simulator worker gave no sign of life for {self.timeout_s:g} s "
                                      "(worker_timeout_s); killed", pending)

    def _handle(self, worker: _Worker, message, pending: deque) -> None:
        kind, payload = message
        if kind == "record":
            record, demo = payload
            if demo is not None and self.on_demo is not None:  # before the record, as the sequential path does
                self.on_demo(demo)
            self.on_record(record)
            self._assign(worker, pending)
        elif kind == "reset":
            try:
                self.policy.reset_slot(worker.slot, payload)
                worker.conn.send(("ok", None))
            except TaskNotSupported as e:
                worker.conn.send(("error", e))
            worker.phase = "stepping"
        elif kind == "act":
            worker.phase, worker.query = "waiting", payload
        elif kind == "alive":
            pass
        elif kind == "failed":
            self.check_interrupt()
            raise payload
        elif kind == "crash":
            self.check_interrupt()
            raise WorkerFailed(f"simulator worker {worker.slot} failed:\n{payload}")
        else:
            raise WorkerFailed(f"simulator worker {worker.slot} sent an unknown message {kind!r}")

    def _answer_queries(self) -> None:
        """One batched query for every worker waiting now."""
        waiting = [w for w in self.workers if w.phase == "waiting"]
        if not waiting:
            return
        outputs = self.policy.act_batch([(w.slot, w.query) for w in waiting], prepared=self.prepared)
        for worker, output in zip(waiting, outputs):
            task, init_index = worker.job
            worker.conn.send(("ok", check_actions(output, task.task_id, init_index)))
            worker.phase, worker.query, worker.heard = "stepping", None, time.monotonic()


def _death(worker: _Worker) -> str:
    worker.process.join(1.0)
    return f"simulator worker died (exit code {worker.process.exitcode})"


def _kill(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join(5.0)
    worker.conn.close()


def run_parallel(cfg: DictConfig, benchmark_module: str, policy,
                 jobs: Sequence[tuple[Task, int]], on_record: Callable[[EpisodeRecord], None],
                 check_interrupt: Callable[[], None], on_demo: Callable[[dict], None] | None = None) -> None:
    """Run `jobs` on `cfg.num_envs` workers (see the module docstring); `on_demo` writes the successful episodes
    the workers recorded (`record_demos`)."""
    if not POLICIES[cfg.policy.name].beside_simulator and not isinstance(policy, BatchedPolicy):
        raise TypeError(f"policy {type(policy).__name__} cannot serve several episodes at once (no act_batch)")
    WorkerPool(cfg, benchmark_module, policy, on_record, check_interrupt, on_demo).run(jobs)
