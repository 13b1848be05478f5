"""Per-run result store: one JSON line per finished episode, appended and flushed at once.

A run directory holds `config.yaml` (the resolved config), `episodes/taskNN.jsonl` (the source of
truth: one file per task, so jobs sharded by task never write to the same file) and, written at the end,
`summary.json` and `per_task.csv`/`per_task.md`. Because every finished episode is on disk before the next
starts, a crash or Ctrl-C loses nothing finished and a re-run with the same directory skips what is done.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

EPISODES_DIR = "episodes"
IDENTITY_FILE = "run_identity.json"


@dataclass
class EpisodeRecord:
    suite: str
    task_id: int
    task: str
    init_index: int
    success: bool
    steps: int
    wall_time_s: float
    status: str = "ok"  # ok | env_error | skipped
    error: str | None = None
    queries: list[dict] = field(default_factory=list)  # per policy query stats (timings, kept tokens)
    video: str | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.task_id, self.init_index)


class RunMismatch(ValueError):
    pass


class ResultStore:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.episodes_dir = self.run_dir / EPISODES_DIR

    def task_file(self, task_id: int) -> Path:
        return self.episodes_dir / f"task{task_id:02d}.jsonl"

    def check_identity(self, identity: dict) -> None:
        """Refuse to mix episodes of different experiments in one directory (resume safety)."""
        path = self.run_dir / IDENTITY_FILE
        if path.exists():
            previous = json.loads(path.read_text())
            if previous != identity:
                diff = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
                raise RunMismatch(
                    f"{self.run_dir} holds a run with different settings ({', '.join(diff)}): "
                    f"choose another output_dir or delete that directory"
                )
        else:
            path.write_text(json.dumps(identity, indent=1, sort_keys=True))

    def records(self) -> list[EpisodeRecord]:
        """Finished episodes; a torn last line (crash mid-write) is ignored."""
        out = []
        for path in sorted(self.episodes_dir.glob("task*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    out.append(EpisodeRecord(**json.loads(line)))
                except (json.JSONDecodeError, TypeError):
                    continue
        return out

    def done_keys(self) -> set[tuple[int, int]]:
        return {r.key for r in self.records()}

    def append(self, record: EpisodeRecord) -> None:
        path = self.task_file(record.task_id)
        path.parent.mkdir(exist_ok=True)
        _repair_torn_tail(path)
        with open(path, "a") as f:
            f.write(json.dumps(asdict(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _repair_torn_tail(path: Path) -> None:
    """A crash can leave a last line without newline; start the next record on a fresh line."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
