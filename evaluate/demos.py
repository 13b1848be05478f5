"""Record successful episodes as HDF5 files in LIBERO's own dataset layout, and load them back.

Why this format: LIBERO's released demonstrations are HDF5 files, one per task, `<suite>/<task>_demo.hdf5`
with `data/demo_<i>/{actions, obs/*, states, robot_states, rewards, dones}` and the task's language in
`data.attrs["problem_info"]`. Recording the same layout means LIBERO's and robomimic's data loaders (and
every fine-tuning script built on them) read these demos unchanged; h5py is the only dependency.
Additions beyond LIBERO's keys, so a file says how it was made: per-demo attrs `suite`, `task_id`,
`init_index`, `instruction`, `seed`, `start` (`init_state`: LIBERO's init state `init_index`, i.e. an evaluation
start; `sampled`: the placement LIBERO's own sampler drew from seed `placement_seed`) and `placement_seed`; per
file `recorded_by` (the policy's description) and `num_demos`. Images are stored as the env renders them (256x256,
OpenGL convention: upside down, like LIBERO's files).

Crash safety: an episode is buffered in memory and written by `finish(success=True)`, which opens the
file, appends the demo and closes it again, so every finished demo is on disk whatever happens later. A simulator
worker (`num_envs` > 1) records into a recorder without a root and sends the finished episode to the main
process, which writes it with `write_demo` (one writer per file).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from evaluate.envs.base import Observation
from evaluate.envs.libero_conventions import quat_to_axis_angle

OBS_KEYS = {  # LIBERO dataset key -> env observation key
    "agentview_rgb": "agentview_image",
    "eye_in_hand_rgb": "robot0_eye_in_hand_image",
    "joint_states": "robot0_joint_pos",
    "gripper_states": "robot0_gripper_qpos",
    "ee_pos": "robot0_eef_pos",
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class DemoRecorder:
    """`start(ctx)`, then `add(obs, action)` per policy env step, then `finish(success)` per episode;
    `close()` at the end of a run. `ctx.env`, if set during `add`, also yields LIBERO's `states`.
    With a `root`, `finish` writes a successful episode there; without, it keeps it for `take()`."""

    def __init__(self, root: str | Path | None, recorded_by: str = ""):
        self.root = None if root is None else Path(root)
        self.recorded_by = recorded_by
        self._ep: dict | None = None
        self._finished: dict | None = None

    def start(self, ctx) -> None:
        self._ep = {"ctx": ctx, "obs": {k: [] for k in OBS_KEYS}, "ee_ori": [], "robot_states": [],
                    "actions": [], "states": []}

    def add(self, obs: Observation, action: np.ndarray) -> None:
        """The observation the action was chosen on, and that action (env convention). LIBERO's own format:
        read from the simulator's observation (`obs.raw`), images as rendered."""
        ep, raw = self._ep, obs.raw
        for key, env_key in OBS_KEYS.items():
            ep["obs"][key].append(np.asarray(raw[env_key]))
        quat = np.asarray(raw["robot0_eef_quat"])
        ep["ee_ori"].append(quat_to_axis_angle(quat))  # as LIBERO stores `ee_ori`
        ep["robot_states"].append(np.r_[raw["robot0_gripper_qpos"], raw["robot0_eef_pos"], quat])
        ep["actions"].append(np.asarray(action, dtype=np.float64))
        if ep["ctx"].env is not None:
            ep["states"].append(ep["ctx"].env.get_sim_state())

    def finish(self, success: bool) -> Path | None:
        """Write the episode if it succeeded (and has steps); returns the file it went to (None without a root:
        the episode waits for `take()`)."""
        ep, self._ep = self._ep, None
        if ep is None or not success or not ep["actions"]:
            return None
        ctx = ep["ctx"]
        placement = None if ctx.placement_seed is None else int(ctx.placement_seed + ctx.init_index)
        episode = {
            "obs": {key: np.stack(frames) for key, frames in ep["obs"].items()},
            "ee_ori": np.stack(ep["ee_ori"]),
            "robot_states": np.stack(ep["robot_states"]),
            "actions": np.stack(ep["actions"]),
            "states": np.stack(ep["states"]) if ep["states"] else None,
            "attrs": {"suite": ctx.suite, "task_id": ctx.task_id, "init_index": ctx.init_index,
                      "instruction": ctx.instruction, "seed": ctx.seed,
                      "start": "init_state" if placement is None else "sampled",
                      "placement_seed": -1 if placement is None else placement},
            "recorded_by": self.recorded_by,
        }
        if self.root is None:
            self._finished = episode
            return None
        return write_demo(self.root, episode)

    def write(self, episode: dict) -> Path:
        """Write an episode another recorder (a simulator worker's) finished, into this recorder's root."""
        return write_demo(self.root, {**episode, "recorded_by": self.recorded_by})

    def take(self) -> dict | None:
        """The last finished successful episode of a recorder without a root (once)."""
        episode, self._finished = self._finished, None
        return episode

    def close(self) -> None:
        """Drop an episode that never finished; no file is held open between episodes."""
        self._ep = None


def write_demo(root: str | Path, episode: dict) -> Path:
    """Append a finished episode (`DemoRecorder.finish`'s) to its task's file under `root`; returns the file."""
    attrs = episode["attrs"]
    path = Path(root) / attrs["suite"] / f"{_slug(attrs['instruction'])}_demo.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "a") as f:
        data = f.require_group("data")
        if "problem_info" not in data.attrs:
            data.attrs["problem_info"] = json.dumps({"language_instruction": attrs["instruction"]})
            data.attrs["macros_image_convention"] = "opengl"
            data.attrs["num_demos"] = 0
            data.attrs["total"] = 0
            data.attrs["recorded_by"] = episode["recorded_by"]
        n = int(data.attrs["num_demos"])
        demo = data.create_group(f"demo_{n}")
        obs = demo.create_group("obs")
        for key, arr in episode["obs"].items():
            obs.create_dataset(key, data=arr, compression="lzf" if arr.ndim == 4 else None)
        obs["ee_ori"] = episode["ee_ori"]
        obs["ee_states"] = np.concatenate([episode["obs"]["ee_pos"], episode["ee_ori"]], axis=1)
        actions = episode["actions"]
        demo["actions"] = actions
        demo["robot_states"] = episode["robot_states"]
        if episode["states"] is not None:
            demo["states"] = episode["states"]
            demo.attrs["init_state"] = episode["states"][0]
        done = np.zeros(len(actions), dtype=np.uint8)
        done[-1] = 1
        demo["dones"], demo["rewards"] = done, done.copy()
        demo.attrs.update(num_samples=len(actions), **attrs)
        data.attrs["num_demos"] = n + 1
        data.attrs["total"] = int(data.attrs["total"]) + len(actions)
    return path


DEMO_NAME = re.compile(r"demo_\d+")  # data/demo_N; other groups (robomimic's masks, ...) are not demos
# what `read_demo` and `demo_observations` read of every demo, one row per step each
REQUIRED_ARRAYS = ("actions", "robot_states", *(f"obs/{key}" for key in OBS_KEYS))


class DemoFileError(ValueError):
    """A demonstration file that cannot be replayed or trained on; the message names the file (and demo) and what
    is wrong, so a command can refuse it in one line before any weights load."""


def demo_index(path: str | Path) -> list[dict]:
    """Every demo under `path` (a recorder root, a run directory or one .hdf5 file), its attributes only (plus
    `file`, `name` and `num_samples`, its number of steps), in file then demo order: what a replay checks before it
    reads any frame. Each demo's arrays are checked to be there, one row per step (DemoFileError)."""
    path = Path(path)
    files = sorted(path.rglob("*_demo.hdf5")) if path.is_dir() else [path]
    return [entry for file in files for entry in _file_index(file)]


def _file_index(file: Path) -> list[dict]:
    not_demo = f"{file} is not a demo file (HDF5 with data/demo_N groups)"
    try:
        with h5py.File(file, "r") as f:
            if not isinstance(f.get("data"), h5py.Group):
                raise DemoFileError(f"{not_demo}: it has no `data` group")
            names = sorted((n for n in f["data"] if DEMO_NAME.fullmatch(n)), key=lambda s: int(s.split("_")[1]))
            return [_entry(file, name, f["data"][name]) for name in names]
    except OSError as e:
        raise DemoFileError(f"{not_demo}: {' '.join(str(e).split())}") from None


def _entry(file: Path, name: str, group) -> dict:
    where = f"{file} {name}"
    if not isinstance(group, h5py.Group):
        raise DemoFileError(f"{where} is not a group of arrays")
    missing = [key for key in REQUIRED_ARRAYS if not isinstance(group.get(key), h5py.Dataset)]
    if missing:
        raise DemoFileError(f"{where} has no {', '.join(missing)} (the layout python -m evaluate record_demos=true "
                            "writes)")
    shapes = {key: group[key].shape for key in REQUIRED_ARRAYS}
    steps = shapes["actions"][0] if shapes["actions"] else 0
    if steps == 0:
        raise DemoFileError(f"{where} has no steps (its actions are empty)")
    uneven = [key for key, shape in shapes.items() if shape[:1] != (steps,)]
    if uneven:
        raise DemoFileError(f"{where}: {', '.join(uneven)} do not have one row per step ({steps} actions)")
    if shapes["actions"][1:] != (7,) or shapes["robot_states"][1:] != (9,):
        raise DemoFileError(f"{where}: actions {shapes['actions']} and robot_states {shapes['robot_states']} are "
                            "not 7 and 9 values per step")
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in group.attrs.items()}
    return {**attrs, "file": str(file), "name": name, "num_samples": int(steps)}


def read_demo(entry: dict) -> dict:
    """One demo of `demo_index` as plain numpy dicts (its arrays, `obs`, its attributes and `file`)."""
    with h5py.File(entry["file"], "r") as f:
        g = f["data"][entry["name"]]
        demo = {key: g[key][()] for key in g if key != "obs"}
        demo["obs"] = {key: g["obs"][key][()] for key in g["obs"]}
    demo.update({k: v for k, v in entry.items() if k != "name"})
    return demo


def load_demos(path: str | Path) -> list[dict]:
    """Every demo under `path` (a recorder root or one .hdf5 file) as plain numpy dicts."""
    return [read_demo(entry) for entry in demo_index(path)]


def demo_observations(demo: dict):
    """A loaded demo's steps (`load_demos`) as the observations the live env gave the policy at those states:
    the same `Observation` (upright cameras by role, proprio state, instruction), so that training and offline
    replay see exactly what a rollout's policy sees (tests/test_demos_sim.py checks it against the live env)."""
    from evaluate.envs.libero import observation

    obs = demo["obs"]
    for t in range(len(demo["actions"])):
        raw = {value: obs[key][t] for key, value in OBS_KEYS.items()}
        raw["robot0_eef_quat"] = demo["robot_states"][t, 5:9]  # [gripper(2), eef pos(3), eef quat(4)]
        yield observation(raw, demo["instruction"])

