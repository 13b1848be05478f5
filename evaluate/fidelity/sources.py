"""What a replay reads: the demonstrations under `source=` (evaluate.demos), indexed without reading a frame.

Recorded observation streams exist in one form: the HDF5 demos `record_demos=true` writes (the scripted expert's,
or any run's successful episodes under its `demos/`), which hold both cameras, the robot state and the actions
taken at every step. Nothing else in a run directory can be replayed: episode records hold per-query statistics,
not frames, and `video=true` writes the agent view only, as lossy MP4, without the wrist camera and the state that
OpenVLA-OFT and pi0 read.
"""
from __future__ import annotations

from pathlib import Path

from evaluate.config import ConfigError
from evaluate.demos import DemoFileError, demo_index

REQUIRED_ATTRS = ("suite", "task_id", "init_index", "instruction")


def demo_entries(source: Path, episodes: int | None) -> tuple[list[dict], str]:
    """The demos to replay (the first `episodes` of them, files in name order) and their suite."""
    if not source.exists():
        raise ConfigError(f"source={source} does not exist; give a demo .hdf5 file, a directory of them, or a run "
                          "directory recorded with record_demos=true")
    try:
        entries = demo_index(source)
    except DemoFileError as e:  # names the file and what it lacks
        raise ConfigError(str(e)) from None
    if not entries:
        videos = " (its videos/ hold the agent view only, no state: not replayable)" * (source / "videos").is_dir()
        raise ConfigError(f"source={source} holds no demos (*_demo.hdf5){videos}; record them with "
                          "record_demos=true, e.g. python -m evaluate policy=scripted suite=libero_object "
                          "record_demos=true")
    for entry in entries:
        missing = [a for a in REQUIRED_ATTRS if a not in entry]
        if missing:
            raise ConfigError(f"{entry['file']} {entry['name']} lacks {', '.join(missing)}: only demos recorded by "
                              "this harness (record_demos=true) say which suite and task they are")
    suites = sorted({entry["suite"] for entry in entries})
    if len(suites) > 1:
        raise ConfigError(f"source={source} holds demos of several suites ({', '.join(suites)}); replay one suite "
                          "at a time (each has its own action statistics)")
    return entries[:episodes], suites[0]
