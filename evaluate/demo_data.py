"""Training arrays (vla_pruner.training.ChunkData) from the harness's demonstration files, cached on disk.

Each recorded step becomes what the policy sees at that state in a rollout: `demo_observations` gives the live
env's `Observation` (upright cameras, proprio state), and each camera goes through the policy's own image path up
to the crop (`model_image(..., center_crop=False)`: JPEG round trip, Lanczos to 224); the crop is the training
augmentation's (random) or the evaluation's (centre). Actions are turned into the model's convention (gripper
0 close .. 1 open; the env's -1 open / +1 close). Each demo is preprocessed once (cached by file, name and length);
the frames of a set of demos are gathered in one .npy memmap (about 0.3 MB a step).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluate.demos import demo_index, demo_observations, read_demo
from evaluate.envs.base import PRIMARY, WRIST
from vla_pruner.models.preprocess import IMAGE_SIZE, model_image
from vla_pruner.training.data import ChunkData

CAMERAS = (PRIMARY, WRIST)  # OpenVLA-OFT's image order


def env_to_model_gripper(actions: np.ndarray) -> np.ndarray:
    """Env actions (gripper -1 open / +1 close) -> the model's (0 close .. 1 open): the inverse of
    vla_pruner.models.openvla.action_tokenizer.gripper_to_env."""
    out = np.array(actions, dtype=np.float64, copy=True)
    out[..., -1] = np.clip((1.0 - out[..., -1]) / 2.0, 0.0, 1.0)
    return out


def demo_key(entry: dict) -> str:
    """A demo named by what it is (task, start, length), not where its file is: a copied or moved file keeps its
    cache."""
    fields = {k: entry.get(k) for k in ("suite", "task_id", "init_index", "start", "placement_seed", "seed",
                                         "num_samples")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=_plain).encode()).hexdigest()[:16]


def demo_files(source: str | Path) -> list[Path]:
    source = Path(source)
    files = sorted(source.rglob("*_demo.hdf5")) if source.is_dir() else [source]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no demonstration files (*_demo.hdf5) at {source}")
    return files


def preprocess_demo(entry: dict, out: Path) -> None:
    """One demo's model-view frames, states and model-convention actions, saved to `out` (.npz, written atomically)."""
    demo = read_demo(entry)
    frames, states = [], []
    for obs in demo_observations(demo):
        frames.append([model_image(obs.images[camera], center_crop=False) for camera in CAMERAS])
        states.append(obs.state)
    attrs = {k: demo.get(k) for k in ("suite", "task_id", "instruction", "start", "placement_seed", "init_index")}
    tmp = out.with_suffix(".partial.npz")
    np.savez(tmp, frames=np.asarray(frames, dtype=np.uint8), states=np.stack(states),
             actions=env_to_model_gripper(demo["actions"]),
             attrs=json.dumps({**attrs, "file": entry["file"], "demo": entry["name"]}, default=_plain))
    tmp.replace(out)


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def build_chunk_data(sources: str | Path | list, cache: str | Path, workers: int = 1) -> tuple[ChunkData, dict]:
    """The demos under `sources` (one path or several: e.g. clean and DART demonstrations) as ChunkData, with their
    provenance (suite, task, start, placement seed per demo).
    Each demo is preprocessed once into `cache` (by file, name and length, so demos recorded later are added
    without redoing the others; `workers` processes), then all frames are gathered into one memmap."""
    sources = sources if isinstance(sources, list) else [sources]
    index = [entry for source in sources for file in demo_files(source) for entry in demo_index(file)]
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    keys = [demo_key(entry) for entry in index]
    per_demo = [cache / f"demo-{key}.npz" for key in keys]
    todo = [(entry, out) for entry, out in zip(index, per_demo) if not out.is_file()]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [pool.submit(preprocess_demo, *job) for job in todo]
            for job in tqdm(as_completed(jobs), total=len(jobs), desc="preprocess demos", unit="demo"):
                job.result()
    else:
        for job in tqdm(todo, desc="preprocess demos", unit="demo"):
            preprocess_demo(*job)
    key = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]
    frames_file = cache / f"frames-{key}.npy"
    total = sum(int(entry["num_samples"]) for entry in index)
    parts = [np.load(path) for path in per_demo]
    if not frames_file.is_file():
        tmp = frames_file.with_suffix(".partial.npy")
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(total, len(CAMERAS), IMAGE_SIZE, IMAGE_SIZE, 3))
        row = 0
        for part in parts:
            chunk = part["frames"]
            frames[row:row + len(chunk)] = chunk
            row += len(chunk)
        frames.flush()
        del frames
        tmp.replace(frames_file)
    provenance = [json.loads(str(part["attrs"])) for part in parts]
    data = ChunkData(np.load(frames_file, mmap_mode="r"), np.concatenate([p["states"] for p in parts]),
                     np.concatenate([p["actions"] for p in parts]),
                     np.concatenate([np.full(int(entry["num_samples"]), i) for i, entry in enumerate(index)]),
                     [p["instruction"] for p in provenance])
    return data, {"demos": provenance, "cache_key": key}
