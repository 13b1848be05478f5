"""One episode: reset to an init state, query the policy, execute its action chunks, record the outcome.

Simulator errors end the episode as a recorded failure with the error text; they never crash the run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable


from evaluate.envs.base import PRIMARY, Observation, TaskEnv
from evaluate.policy import EpisodeContext, Policy, TaskNotSupported, check_actions
from evaluate.store import EpisodeRecord


class VideoWriter:
    """Streams the primary camera's (upright) frames to `<stem>.mp4` and renames it once the outcome is known."""

    def __init__(self, directory: Path, stem: str, fps: int = 20):
        import imageio.v2 as imageio

        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.stem = directory, stem
        self.tmp = directory / f"{stem}.partial.mp4"
        self.writer = imageio.get_writer(self.tmp, fps=fps, macro_block_size=1)

    def add(self, obs: Observation) -> None:
        self.writer.append_data(obs.images[PRIMARY])

    def finish(self, success: bool) -> str:
        self.writer.close()
        final = self.directory / f"{self.stem}_{'success' if success else 'failure'}.mp4"
        self.tmp.replace(final)
        return final.name

    def abandon(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def open_env(benchmark, task, cameras, cfg) -> TaskEnv:
    """The env of `task` for a run of `cfg` (sequential path and simulator workers alike): official init states, or
    LIBERO's own placement sampler from `cfg.placement_seed`."""
    placement = {} if cfg.placement_seed is None else {"placement_seed": int(cfg.placement_seed)}
    return benchmark.make_env(task, cameras, **placement)


def episode_context(cfg, task, init_index: int) -> EpisodeContext:
    return EpisodeContext(cfg.suite.name, task.task_id, task.instruction, init_index, cfg.seed,
                          placement_seed=cfg.placement_seed)


class SimulatorError(RuntimeError):
    """The simulator failed (e.g. MuJoCo instability); the episode is recorded as a failure."""


def _sim(call, *args, check_interrupt: Callable[[], None] | None = None):
    try:
        result = call(*args)
    except Exception as e:
        raise SimulatorError(f"{type(e).__name__}: {e}") from e
    if check_interrupt is not None:
        check_interrupt()
    return result


def run_episode(
    env: TaskEnv,
    policy: Policy,
    ctx: EpisodeContext,
    max_steps: int,
    video_dir: Path | None = None,
    demos=None,
    check_interrupt: Callable[[], None] | None = None,
) -> EpisodeRecord:
    """Errors of the policy itself propagate (a bug must not look like a failed episode), a non-finite action
    (NonFiniteAction) among them.
    `check_interrupt` runs after every simulator call and may raise KeyboardInterrupt."""
    record = EpisodeRecord(
        suite=ctx.suite, task_id=ctx.task_id, task=ctx.instruction, init_index=ctx.init_index,
        success=False, steps=0, wall_time_s=0.0,
    )
    start = time.perf_counter()
    video = None
    try:
        obs = _sim(env.start_episode, ctx.init_index, check_interrupt=check_interrupt)
        ctx.env = env.live
        policy.reset(ctx)
        if demos is not None:
            demos.start(ctx)
        if video_dir is not None:
            video = VideoWriter(video_dir, f"task{ctx.task_id:02d}_init{ctx.init_index:02d}")
            video.add(obs)
        while record.steps < max_steps and not record.success:
            out = check_actions(policy.act(obs), ctx.task_id, ctx.init_index)
            record.queries.append(out.info)
            labels = out.actions if out.labels is None else out.labels
            for action, label in zip(out.actions, labels):
                if demos is not None:
                    demos.add(obs, label)
                obs, record.success = _sim(env.step, action, check_interrupt=check_interrupt)
                record.steps += 1
                if video is not None:
                    video.add(obs)
                if record.success or record.steps >= max_steps:
                    break
    except TaskNotSupported as e:
        record.status, record.error = "skipped", str(e)
    except SimulatorError as e:
        record.status, record.error = "env_error", str(e)
    except BaseException:
        if video is not None:  # interrupted or crashed: this episode is not recorded, nor its video
            video.abandon()
        raise
    finally:
        ctx.env = None
    if video is not None:
        record.video = video.finish(record.success)
    if demos is not None and record.status == "ok":
        demos.finish(record.success)
    record.wall_time_s = round(time.perf_counter() - start, 3)
    end_episode = getattr(policy, "end_episode", None)  # a policy served elsewhere (policy=remote) tells its server
    if end_episode is not None:
        end_episode(record)
    return record
