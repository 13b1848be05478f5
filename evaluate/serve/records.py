"""The served episodes in the harness's own run-directory format (evaluate/store.py), so `python -m evaluate.report`
and `scripts/collect.py` read a served evaluation as they read a run: one record per ended episode (its success from
the client's EPISODE_END, its steps, each query's kept tokens, per-layer prefill tokens for the FLOPs, latency),
`wanted/` (every episode a client started), `run_identity.json`, `config.yaml`, `summary.json` with the cost.

The identity is the served configuration's (model, checkpoint and its weights, pruner, keep, seed, suite, device)
plus `served: true`: the client ran the simulator, so these episodes never pool with the harness's own runs of the
same configuration (a report shows them as a row of their own, `served=True`). A directory holds each (task, init
state) once, as a run does: a client that runs an episode the directory holds already is answered, and the episode
is not recorded again (a warning says so; another output_root records a new evaluation).
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from evaluate.analysis.metrics import query_metrics
from evaluate.config import run_identity
from evaluate.envs.suites import model_suite, suite_info
from evaluate.store import EpisodeRecord, ResultStore
from evaluate.summary import write_summary
from evaluate.weights import with_weights

log = logging.getLogger(__name__)
SERVED_KEY = "served"


class ServedRecords:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.store = ResultStore(Path(cfg.output_dir))
        self.identity = {**run_identity(cfg), SERVED_KEY: True}
        self.meta: dict = {}
        self._lock = threading.Lock()  # sessions end in worker threads

    def check(self) -> None:
        """Refuse a directory holding another experiment (before any weights load)."""
        self.store.check_identity(self.identity)

    @contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold every task of the suite for the server's life: no run and no other server writes here meanwhile."""
        with self.store.lock_tasks(range(suite_info(self.cfg.suite.name).tasks)):
            yield

    def start(self, described: dict, served: dict) -> None:
        """Claim the directory once the policy is built (`described`: its description; `served`: how it is served)."""
        identity = with_weights(self.identity, described)
        self.store.write_identity(identity)
        config = OmegaConf.to_container(self.cfg, resolve=True)
        (self.store.run_dir / "config.yaml").write_text(OmegaConf.to_yaml({**config, SERVED_KEY: True}))
        self.meta = {"run_dir": str(self.store.run_dir), "policy": described, SERVED_KEY: served,
                     "suite": self.cfg.suite.name, "model_suite": model_suite(self.cfg.suite.name),
                     "model_choice": self.cfg.model_choice, "keep": self.cfg.keep, "seed": self.cfg.seed}
        self._publish()

    def want(self, task_id: int, init_index: int) -> None:
        """A client started this episode: the directory is complete only once it ends."""
        with self._lock:
            self.store.want([(task_id, init_index)])

    def add(self, record: EpisodeRecord) -> None:
        with self._lock:
            max_steps = int(self.cfg.suite.max_steps)
            if not record.success and record.status == "ok" and record.steps < max_steps:
                log.warning("task %d init state %d failed after %d steps, before this server's suite.max_steps=%d: the "
                            "client's step limit is lower (start the server with suite.max_steps=%d to record its "
                            "limit)", record.task_id, record.init_index, record.steps, max_steps, record.steps)
            if record.key in self.store.done_keys():
                log.warning("%s holds task %d init state %d already: this episode is not recorded again (start the "
                            "server with another output_root to record a new evaluation)", self.store.run_dir,
                            record.task_id, record.init_index)
                return
            self.store.append(record)
            self._publish()

    def _publish(self) -> None:
        records = self.store.records()
        cost = query_metrics(records, OmegaConf.to_container(self.cfg.model, resolve=True))
        write_summary(self.store.run_dir, records, {**self.meta, "cost": cost}, self.store.progress(records))
