"""Training arrays (vla_pruner.training.ChunkData) from the harness's demonstration files, cached on disk.

Each recorded step becomes what the policy sees at that state in a rollout: `demo_observations` gives the live
env's `Observation` (upright cameras, proprio state), and each camera goes through the policy's own image path up
to the crop (`model_image(..., center_crop=False)`: JPEG round trip, Lanczos to 224); the crop is the training
augmentation's (random) or the evaluation's (centre). Actions are turned into the model's convention (gripper
0 close .. 1 open; the env's -1 open / +1 close). Each demo is preprocessed once, cached by its content (a demo
re-recorded under the same attributes is another demo; a copied or moved file keeps its cache); the frames of a set
of demos are gathered in one .npy memmap (about 0.3 MB a step). Before any of that (`scan_demos`), every demo is
indexed and checked from its arrays without decoding an image: malformed files and non-finite actions or states are
a DemoFileError naming file and demo, and a demo given twice counts once.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from evaluate.demos import DemoFileError, demo_index, demo_observations, read_demo
from evaluate.envs.base import PRIMARY, WRIST
from vla_pruner.models.preprocess import IMAGE_SIZE, model_image
from vla_pruner.training.data import ChunkData

CAMERAS = (PRIMARY, WRIST)  # OpenVLA-OFT's image order


def env_to_model_gripper(actions: np.ndarray) -> np.ndarray:
    """Env actions (gripper -1 open / +1 close) -> the model's (0 close .. 1 open): the inverse of
    evaluate.envs.libero_conventions.gripper_to_env."""
    out = np.array(actions, dtype=np.float64, copy=True)
    out[..., -1] = np.clip((1.0 - out[..., -1]) / 2.0, 0.0, 1.0)
    return out


KEY_ATTRS = ("suite", "task_id", "instruction", "init_index", "start", "placement_seed", "seed")
PROVENANCE_ATTRS = ("suite", "task_id", "instruction", "start", "placement_seed", "init_index")


@dataclass
class DemoSet:
    """The demos of a set of sources, each once: demo_index entries in source order, with their content keys."""

    entries: list[dict]
    keys: list[str]
    duplicates: int  # demos left out because an earlier one has the same content


def demo_key(entry: dict) -> str:
    """A demo named by what it is, not where its file is: its attributes and the content of its arrays (each
    non-image array in full, each image array by its shape and stored size, which any other frame changes in a
    compressed file). A copied or moved file keeps its key; a demo re-recorded with the same attributes gets another.
    A non-finite value in a non-image array is a DemoFileError naming the file, the demo and the array."""
    digest = hashlib.sha256(json.dumps({k: entry.get(k) for k in KEY_ATTRS}, sort_keys=True,
                                       default=_plain).encode())
    with h5py.File(entry["file"], "r") as f:
        group = f["data"][entry["name"]]
        group.visititems(lambda name, item: _digest(name, item, digest, f"{entry['file']} {entry['name']}"))
    return digest.hexdigest()[:16]


def _digest(name: str, item, digest, where: str) -> None:
    if not isinstance(item, h5py.Dataset):
        return
    digest.update(f"{name} {item.shape} {item.dtype}".encode())
    if item.ndim == 4:  # frames: the stored (compressed) size stands for the content, read without decoding
        digest.update(str(item.id.get_storage_size()).encode())
        return
    values = np.ascontiguousarray(item[()])
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        step = int(np.argwhere(~np.isfinite(values))[0][0]) if values.ndim else 0
        raise DemoFileError(f"{where}: {name} holds a non-finite value (nan or inf) at step {step}; such a demo "
                            "would train every weight to nan")
    digest.update(values.tobytes())


def demo_files(source: str | Path) -> list[Path]:
    source = Path(source)
    files = sorted(source.rglob("*_demo.hdf5")) if source.is_dir() else [source]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no demonstration files (*_demo.hdf5) at {source}")
    return files


def scan_demos(sources: str | Path | list) -> DemoSet:
    """The demos under `sources` (one path or several: e.g. clean and DART demonstrations), indexed and keyed
    without decoding an image; a demo whose content an earlier one has is left out (given twice, it would land in
    both the training and the validation split). None at all is a DemoFileError."""
    sources = sources if isinstance(sources, list) else [sources]
    found = [entry for source in sources for file in demo_files(source) for entry in demo_index(file)]
    unique: dict[str, dict] = {}
    for entry in found:
        unique.setdefault(demo_key(entry), entry)  # the first of equal demos, in its place
    if not unique:
        raise DemoFileError(f"no demonstrations (data/demo_N groups) in {', '.join(map(str, sources))}")
    return DemoSet(list(unique.values()), list(unique), len(found) - len(unique))


def preprocess_demo(entry: dict, out: Path) -> None:
    """One demo's model-view frames, states and model-convention actions, saved to `out` (.npz, written atomically)."""
    demo = read_demo(entry)
    frames, states = [], []
    for obs in demo_observations(demo):
        frames.append([model_image(obs.images[camera], center_crop=False) for camera in CAMERAS])
        states.append(obs.state)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.partial.npz")  # trainings may share the cache
    np.savez(tmp, frames=np.asarray(frames, dtype=np.uint8), states=np.stack(states),
             actions=env_to_model_gripper(demo["actions"]))
    tmp.replace(out)


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def _leave_signals_to_the_main_process() -> None:
    """A preprocessing worker ignores Ctrl-C and SIGTERM: the main process stops, and stops the workers, with one
    message instead of a traceback per worker."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _preprocess(todo: list[tuple[dict, Path]], workers: int) -> None:
    if workers < 2 or len(todo) < 2:
        for job in tqdm(todo, desc="preprocess demos", unit="demo"):
            preprocess_demo(*job)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_leave_signals_to_the_main_process)
    try:
        jobs = [pool.submit(preprocess_demo, *job) for job in todo]
        for job in tqdm(as_completed(jobs), total=len(jobs), desc="preprocess demos", unit="demo"):
            job.result()
    finally:  # stopped: the demos being preprocessed finish (seconds), the others are not started
        pool.shutdown(cancel_futures=True)


def build_chunk_data(sources: str | Path | list | DemoSet, cache: str | Path,
                     workers: int = 1) -> tuple[ChunkData, dict]:
    """The demos under `sources` (paths, or a `scan_demos` result) as ChunkData, with their provenance (suite,
    task, start, placement seed, file and demo name per demo).
    Each demo is preprocessed once into `cache` (by content, so demos recorded later are added without redoing the
    others; `workers` processes), then all frames are gathered into one memmap."""
    demos = sources if isinstance(sources, DemoSet) else scan_demos(sources)
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    per_demo = [cache / f"demo-{key}.npz" for key in demos.keys]
    _preprocess([(entry, out) for entry, out in zip(demos.entries, per_demo) if not out.is_file()], workers)
    key = hashlib.sha256(json.dumps(demos.keys).encode()).hexdigest()[:16]
    frames_file = cache / f"frames-{key}.npy"
    lengths = [int(entry["num_samples"]) for entry in demos.entries]
    parts = [np.load(path) for path in per_demo]
    if not frames_file.is_file():
        tmp = frames_file.with_name(f"{frames_file.stem}.{os.getpid()}.partial.npy")
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(sum(lengths), len(CAMERAS), IMAGE_SIZE, IMAGE_SIZE, 3))
        row = 0
        for part in parts:
            chunk = part["frames"]
            frames[row:row + len(chunk)] = chunk
            row += len(chunk)
        frames.flush()
        del frames
        tmp.replace(frames_file)
    provenance = [{**{k: e.get(k) for k in PROVENANCE_ATTRS}, "file": e["file"], "demo": e["name"]}
                  for e in demos.entries]
    data = ChunkData(np.load(frames_file, mmap_mode="r"), np.concatenate([p["states"] for p in parts]),
                     np.concatenate([p["actions"] for p in parts]),
                     np.concatenate([np.full(n, i) for i, n in enumerate(lengths)]),
                     [str(e["instruction"]) for e in demos.entries])
    return data, {"demos": provenance, "cache_key": key}
