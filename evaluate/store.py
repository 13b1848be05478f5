"""Per-run result store: one JSON line per finished episode, appended and flushed at once.

A run directory holds `config.yaml` (the resolved config), `episodes/taskNN.jsonl` (the source of
truth: one file per task, so jobs sharded by task never write to the same file), `wanted/taskNN.json` (the
init states every process on this directory was asked to run, so completeness is derived, never assumed)
and `summary.json`/`per_task.csv`/`per_task.md`, rewritten at start and after every episode.
Because every finished episode is on disk before the next starts, a crash, Ctrl-C or SIGTERM loses nothing
finished and a re-run with the same directory skips what is done.

One writer per task: `lock_tasks` takes an exclusive lock per task (`locks/taskNN.lock`) (POSIX record locks, which the
kernel drops when the holder dies, also on NFS with lockd), so a resubmitted job cannot run beside the old
one; reading de-duplicates (task, init) anyway, so directories written before locks existed never count an
episode twice.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from contextlib import contextmanager
import logging
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Iterable, Iterator, Union, get_args, get_origin, get_type_hints

import yaml

from evaluate.config import NON_IDENTITY_FIELDS, portable
from evaluate.weights import WEIGHTS_KEY

EPISODES_DIR = "episodes"
WANTED_DIR = "wanted"
LOCKS_DIR = "locks"
IDENTITY_FILE = "run_identity.json"
CONFIG_FILE = "config.yaml"
WRITE_ATTEMPTS = 3
RECOVERY_ROOT = Path(tempfile.gettempdir()) / "vla_pruner_recovered"
log = logging.getLogger(__name__)


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


class StoreError(RuntimeError):
    """The run directory cannot be used as asked; the message is meant for the user as is."""


class RunMismatch(StoreError):
    pass


class RunLocked(StoreError):
    pass


class StoreWriteError(StoreError):
    pass


class ConfigUnreadable(ValueError):
    """A run directory's config.yaml that does not hold a config."""


def config_identity(path: Path) -> dict:
    """The experiment a run's config.yaml records: its settings minus those that do not change outcomes."""
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigUnreadable(f"{path} is unreadable ({one_line(e)})") from None
    if not isinstance(cfg, dict):
        raise ConfigUnreadable(f"{path} does not hold a config")
    return portable({k: v for k, v in cfg.items() if k not in NON_IDENTITY_FIELDS})


def one_line(error: Exception) -> str:
    """Parser messages (YAML's especially) span lines; an error or a warning is one line."""
    return " ".join(str(error).split())


def check_writable(directory: str | Path, choose: str = "output_root=... or output_dir=...") -> None:
    """Fail with one line when `directory` cannot be created or written (checked before any work; creates
    nothing: the nearest existing ancestor must be a writable directory). `choose`: how to give another."""
    directory = Path(directory).absolute()
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as e:
        raise StoreError(f"output directory {directory} is not writable ({e.strerror or e}); "
                         f"choose another with {choose}") from None


def atomic_write(path: Path, text: str) -> None:
    """Write a whole file or nothing: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ResultStore:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.episodes_dir = self.run_dir / EPISODES_DIR
        self.wanted_dir = self.run_dir / WANTED_DIR

    def task_file(self, task_id: int) -> Path:
        return self.episodes_dir / f"task{task_id:02d}.jsonl"

    # ---------------------------------------------------------------------------------------- identity

    def check_identity(self, identity: dict) -> None:
        """Refuse to mix episodes of different experiments in one directory (resume safety). Without
        run_identity.json (lost, or a run older than it) the directory's config.yaml tells its experiment."""
        path = self.run_dir / IDENTITY_FILE
        try:
            if path.exists():
                previous = portable(json.loads(path.read_text()))
            elif (self.run_dir / CONFIG_FILE).exists():
                previous = config_identity(self.run_dir / CONFIG_FILE)
            else:
                return
        except ConfigUnreadable as e:
            raise RunMismatch(f"{e}; delete it if the directory holds no episodes") from None
        except (OSError, json.JSONDecodeError) as e:
            raise RunMismatch(f"{path} is unreadable ({e}); delete it if the directory holds no episodes") from None
        if WEIGHTS_KEY not in previous or WEIGHTS_KEY not in identity:
            # one side before its weights are known (the check before the policy loads; a run older than the
            # fingerprints): the settings decide, and the fingerprint is checked once both have one
            if WEIGHTS_KEY in identity and WEIGHTS_KEY not in previous:
                log.warning("%s was recorded before runs fingerprinted their weights: taking its checkpoint to hold "
                            "the same weights as now (%s)", self.run_dir, identity[WEIGHTS_KEY])
            previous, identity = ({k: v for k, v in d.items() if k != WEIGHTS_KEY} for d in (previous, identity))
        if previous != identity:
            diff = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise RunMismatch(
                f"{self.run_dir} holds a run with different settings ({', '.join(diff)}): "
                f"choose another output_dir or delete that directory"
            )

    def write_identity(self, identity: dict) -> None:
        """Called once a run has started (its policy built), so a failed start never claims the directory."""
        self.check_identity(identity)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / IDENTITY_FILE, json.dumps(identity, indent=1, sort_keys=True))

    # ------------------------------------------------------------------------------------------ reading

    def records(self) -> list[EpisodeRecord]:
        """Finished episodes, each (task, init) once (the first written wins); a torn line (crash mid-write)
        is ignored."""
        out, seen = [], set()
        for path in sorted(self.episodes_dir.glob("task*.jsonl")):
            for record in _read_records(path):
                if record.key not in seen:
                    seen.add(record.key)
                    out.append(record)
        return out

    def done_keys(self) -> set[tuple[int, int]]:
        return {r.key for r in self.records()}

    def want(self, keys: Iterable[tuple[int, int]]) -> None:
        """Add (task, init) pairs to the episodes this directory must hold before it is complete."""
        by_task: dict[int, set[int]] = {}
        for task_id, init_index in keys:
            by_task.setdefault(task_id, set()).add(init_index)
        self.wanted_dir.mkdir(parents=True, exist_ok=True)
        for task_id, inits in by_task.items():
            path = self.wanted_dir / f"task{task_id:02d}.json"
            atomic_write(path, json.dumps(sorted(inits | self._wanted_inits(path))))

    @staticmethod
    def _wanted_inits(path: Path) -> set[int]:
        try:
            return set(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            return set()

    def wanted_keys(self) -> set[tuple[int, int]]:
        """Every (task, init) any process asked of this directory; empty for runs older than this file."""
        keys = set()
        for path in self.wanted_dir.glob("task*.json"):
            task_id = int(path.stem.removeprefix("task"))
            keys.update((task_id, i) for i in self._wanted_inits(path))
        return keys

    def progress(self, records: list[EpisodeRecord] | None = None) -> dict:
        """Episodes wanted and done (of those wanted); `complete` is None when nothing was ever wanted (an old
        directory: completeness unknown)."""
        wanted = self.wanted_keys()
        done = {r.key for r in (self.records() if records is None else records)}
        return {"episodes_wanted": len(wanted), "episodes_done": len(wanted & done),
                "complete": (wanted <= done) if wanted else None}

    # ------------------------------------------------------------------------------------------ writing

    @contextmanager
    def lock_tasks(self, task_ids: Iterable[int]) -> Iterator[None]:
        """Hold an exclusive lock on each task's file for the life of the run; refuse (RunLocked) when another
        process holds one, naming it."""
        locks_dir = self.run_dir / LOCKS_DIR
        locks_dir.mkdir(parents=True, exist_ok=True)
        held = []
        try:
            for task_id in sorted(set(task_ids)):
                path = locks_dir / f"task{task_id:02d}.lock"
                handle = open(path, "a+")
                try:
                    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise RunLocked(f"task {task_id} of {self.run_dir} is being run by {holder}; "
                                    f"wait for it to end (or stop it) before running it again") from None
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
                handle.flush()
                held.append(handle)
            yield
        finally:
            for handle in held:
                handle.close()  # closing the file releases its lock

    def append(self, record: EpisodeRecord) -> None:
        """Append and fsync one record; retry, then save it where `recover()` finds it and stop the run."""
        line = json.dumps(asdict(record)) + "\n"
        path = self.task_file(record.task_id)
        error: OSError | None = None
        for attempt in range(WRITE_ATTEMPTS):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _repair_torn_tail(path)
                with open(path, "a") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
                return
            except OSError as e:
                error = e
                time.sleep(0.5 * (attempt + 1))
        saved = self._save_for_recovery(record.task_id, line)
        raise StoreWriteError(f"could not write the record of task {record.task_id} init {record.init_index} to "
                              f"{path} ({error.strerror or error}); {saved}; free space or fix permissions and "
                              f"re-run the same command to resume (the record is restored then)")

    def recovery_file(self, task_id: int) -> Path:
        tag = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:12]
        return RECOVERY_ROOT / tag / f"task{task_id:02d}.jsonl"

    def _save_for_recovery(self, task_id: int, line: str) -> str:
        path = self.recovery_file(task_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(line)
            return f"it was saved to {path}"
        except OSError:
            return f"it could not be saved either; the record: {line.strip()}"

    def recover(self) -> int:
        """Append records a previous run could not write (see `append`); returns how many were restored."""
        restored = 0
        directory = self.recovery_file(0).parent
        for path in sorted(directory.glob("task*.jsonl")):
            done = self.done_keys()
            for record in _read_records(path):
                if record.key not in done:
                    self.append(record)
                    done.add(record.key)
                    restored += 1
            path.unlink()
        return restored


def _read_records(path: Path) -> Iterator[EpisodeRecord]:
    """The records of a JSONL file; a torn line (a crash mid-write) is skipped, and a record whose fields are not
    of their types (edited by hand, written by something else) is skipped with a warning naming it."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            values = json.loads(line)
        except json.JSONDecodeError:
            continue
        problem = record_problem(values)
        if problem is None:
            yield EpisodeRecord(**values)
        else:  # whole JSON (a torn line is not), but not a record: say so
            log.warning("%s line %d is not an episode record (%s); skipped", path, number, problem)


def record_problem(values) -> str | None:
    """What keeps a decoded JSON line from being an EpisodeRecord (a missing, unknown or mistyped field), or None."""
    if not isinstance(values, dict):
        return f"a JSON {type(values).__name__}, not an object"
    hints = get_type_hints(EpisodeRecord)
    unknown = sorted(set(values) - set(hints))
    missing = [f.name for f in fields(EpisodeRecord) if f.name not in values and f.default is MISSING
               and f.default_factory is MISSING]
    if unknown or missing:
        return f"unknown fields {unknown}" if unknown else f"missing fields {missing}"
    wrong = next((name for name, value in values.items() if not _is_of(value, hints[name])), None)
    return None if wrong is None else f"{wrong}={values[wrong]!r} is not of type {_type_name(hints[wrong])}"


def _is_of(value, hint) -> bool:
    """isinstance for the annotations EpisodeRecord uses (bool is not an int here, an int is a float)."""
    if get_origin(hint) in (Union, UnionType):
        return any(_is_of(value, arg) for arg in get_args(hint))
    if get_origin(hint) is list:
        return isinstance(value, list) and all(_is_of(v, get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, get_origin(hint) or hint)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _repair_torn_tail(path: Path) -> None:
    """A crash can leave a last line without newline; start the next record on a fresh line."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
