"""A whole evaluation run: the episodes a config asks for, minus those already on disk.

Order of a start: check the directory's identity, lock the tasks this process will write, build the policy
(weights load here), and only then claim the directory (identity, config, wanted episodes): a start that fails
leaves nothing that blocks the corrected command. Episodes run one at a time in this process (`num_envs=1`) or
on parallel simulator workers (evaluate/parallel.py); either way this process records each episode when it
ends and rewrites the summary.
"""
from __future__ import annotations

import logging
import time
from itertools import groupby
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from evaluate.analysis.metrics import query_metrics
from evaluate.config import run_identity, select_tasks
from evaluate.envs.suites import BENCHMARKS, model_suite, suite_benchmark, suite_info
from evaluate.instructions import told
from evaluate.interrupt import InterruptGuard
from evaluate.parallel import run_parallel
from evaluate.policies import build_policy, cameras_for
from evaluate.rollout import episode_context, open_env, run_episode
from evaluate.store import EpisodeRecord, ResultStore, StoreWriteError
from evaluate.summary import write_summary
from evaluate.weights import with_weights

log = logging.getLogger(__name__)


def _progress_postfix(records) -> dict:
    attempted = [r for r in records if r.status != "skipped"]
    rate = sum(r.success for r in attempted) / len(attempted) if attempted else 0.0
    return {"success": f"{rate:.1%}", "errors": sum(r.status == "env_error" for r in records)}


def run(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.output_dir)
    store = ResultStore(run_dir)
    identity = run_identity(cfg)
    store.check_identity(identity)
    benchmark = suite_benchmark(cfg.suite.name)
    tasks = told(cfg, benchmark.load_suite(cfg.suite.name))
    task_ids = select_tasks(cfg, len(tasks))
    wanted = [(t, i) for t in task_ids for i in range(cfg.episodes_per_task)]
    expected = [] if cfg.expected_tasks is None else select_tasks(cfg, len(tasks), "expected_tasks")

    with store.lock_tasks(task_ids), InterruptGuard() as guard:
        policy = build_policy(cfg)
        described = policy.describe()
        identity = with_weights(identity, described)
        store.write_identity(identity)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        restored = store.recover()
        store.want(wanted + [(t, i) for t in expected for i in range(cfg.episodes_per_task)])
        meta = {"run_dir": str(run_dir), "policy": described, "simulator": benchmark.versions(),
                "suite": cfg.suite.name, "model_suite": model_suite(cfg.suite.name), "model_choice": cfg.model_choice,
                "keep": cfg.keep, "seed": cfg.seed}
        summary, records = _publish(store, meta)
        done = {r.key for r in records}
        todo = [(tasks[t], i) for t, i in wanted if (t, i) not in done]
        log.info("%s: %d episodes wanted, %d already done, %d to run%s", run_dir, len(wanted),
                 len(wanted) - len(todo), len(todo), f" ({restored} restored from a failed write)" * bool(restored))
        if cfg.record_demos and len(todo) < len(wanted):
            log.warning("record_demos=true: %d of the %d episodes asked for are finished in %s and are not run again, "
                        "so they record no demonstration; another output_root or placement_seed runs new episodes",
                        len(wanted) - len(todo), len(wanted), run_dir)
        bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), unit="ep", desc=cfg.suite.name,
                   dynamic_ncols=True)
        bar.set_postfix(_progress_postfix(records))

        ran, started = [], time.monotonic()  # this invocation's episodes, with the time each was recorded

        def record_episode(record: EpisodeRecord) -> None:
            store.append(record)
            ran.append(time.monotonic())
            _, records = _publish(store, meta)
            bar.update(1)
            bar.set_postfix(_progress_postfix(records))

        demos = _demo_recorder(cfg, run_dir, policy)
        finished = False
        try:
            if cfg.num_envs == 1:
                _run_here(cfg, benchmark, policy, todo, demos, record_episode, guard.check)
            else:
                run_parallel(cfg, BENCHMARKS[suite_info(cfg.suite.name).benchmark], policy, todo, record_episode,
                             guard.check, None if demos is None else demos.write)
            finished = True
        finally:
            bar.close()
            if demos is not None:
                demos.close()
            records = store.records()
            cost = query_metrics(records, OmegaConf.to_container(cfg.model, resolve=True))
            try:
                summary, _ = _publish(store, {**meta, "cost": cost, "throughput": _throughput(
                    cfg, ran, time.monotonic() - started)}, records)
            except StoreWriteError as e:
                if finished:
                    raise
                # the error that stopped the run (a record rescued elsewhere, a signal) is the one to report; the
                # summary is rewritten from the records by the next run
                log.warning("%s", e)
    return summary


def _run_here(cfg: DictConfig, benchmark, policy, todo, demos, record_episode, check_interrupt) -> None:
    """The episodes one after the other in this process, one env per task."""
    video_dir = Path(cfg.output_dir) / "videos" if cfg.video else None
    cameras = cameras_for(cfg)
    for task, group in groupby(todo, key=lambda item: item[0]):
        env = open_env(benchmark, task, cameras, cfg)  # created and closed per task, as the official evaluation does
        try:
            for _, init_index in group:
                ctx = episode_context(cfg, task, init_index)
                record = run_episode(env, policy, ctx, cfg.suite.max_steps, video_dir, demos, check_interrupt)
                record_episode(record)
                if record.status == "env_error":  # a failed simulator may be left in a bad state
                    env.close()
                    env = open_env(benchmark, task, cameras, cfg)
        finally:
            env.close()


def _throughput(cfg: DictConfig, recorded_at: list[float], seconds: float) -> dict:
    """This invocation's episodes per hour: over its whole episode loop (workers' start-up and env creation
    included), and sustained, from the num_envs-th episode recorded (every worker past its start-up) to the last:
    what a long run gets."""
    n, first = len(recorded_at), int(cfg.num_envs)
    sustained = (3600 * (n - first) / (recorded_at[-1] - recorded_at[first - 1])
                 if n > first and recorded_at[-1] > recorded_at[first - 1] else None)
    return {"num_envs": first, "episodes": n, "wall_s": round(seconds, 1),
            "episodes_per_hour": round(3600 * n / seconds, 1) if n and seconds > 0 else None,
            "sustained_episodes_per_hour": None if sustained is None else round(sustained, 1)}


def _publish(store: ResultStore, meta: dict,
             records: list[EpisodeRecord] | None = None) -> tuple[dict, list[EpisodeRecord]]:
    """Summary of everything the directory holds now (task shards beside this process add episodes too), and
    the records it was made from (read once here unless given)."""
    records = store.records() if records is None else records
    try:
        return write_summary(store.run_dir, records, meta, store.progress(records)), records
    except OSError as e:  # a full or read-only disk: the records are on disk already, the summary is derived
        raise StoreWriteError(f"could not write the summary of {store.run_dir} ({e.strerror or e}); the finished "
                              f"episodes are recorded in {store.episodes_dir}: free space or fix permissions and "
                              f"re-run the same command to resume") from None


def _demo_recorder(cfg: DictConfig, run_dir: Path, policy):
    if not cfg.record_demos:
        return None
    import json

    from evaluate.demos import DemoRecorder

    return DemoRecorder(run_dir / "demos", recorded_by=json.dumps(policy.describe(), sort_keys=True, default=str))
