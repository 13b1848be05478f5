"""Record successful episodes as HDF5 files in LIBERO's own dataset layout, and load them back.

Why this format: LIBERO's released demonstrations are HDF5 files, one per task, `<suite>/<task>_demo.hdf5`
with `data/demo_<i>/{actions, obs/*, states, robot_states, rewards, dones}` and the task's language in
`data.attrs["problem_info"]`. Recording the same layout means LIBERO's and robomimic's data loaders (and
every fine-tuning script built on them) read these demos unchanged; h5py is the only dependency.
Additions beyond LIBERO's keys: per-demo attrs `suite`, `task_id`, `init_index`, `instruction`, `seed`.
Images are stored as the env renders them (256x256, OpenGL convention: upside down, like LIBERO's files).

Crash safety: an episode is buffered in memory and written by `finish(success=True)`, which opens the
file, appends the demo and closes it again, so every finished demo is on disk whatever happens later.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from evaluate.envs.base import Observation
from vla_pruner.models.robot_state import quat_to_axis_angle

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
    `close()` at the end of a run. `ctx.env`, if set during `add`, also yields LIBERO's `states`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._ep: dict | None = None

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
        """Write the episode if it succeeded (and has steps); returns the file it went to."""
        ep, self._ep = self._ep, None
        if ep is None or not success or not ep["actions"]:
            return None
        ctx = ep["ctx"]
        path = self.root / ctx.suite / f"{_slug(ctx.instruction)}_demo.hdf5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "a") as f:
            data = f.require_group("data")
            if "problem_info" not in data.attrs:
                data.attrs["problem_info"] = json.dumps({"language_instruction": ctx.instruction})
                data.attrs["macros_image_convention"] = "opengl"
                data.attrs["num_demos"] = 0
                data.attrs["total"] = 0
            n = int(data.attrs["num_demos"])
            demo = data.create_group(f"demo_{n}")
            obs = demo.create_group("obs")
            for key, frames in ep["obs"].items():
                arr = np.stack(frames)
                obs.create_dataset(key, data=arr, compression="lzf" if arr.ndim == 4 else None)
            obs["ee_ori"] = np.stack(ep["ee_ori"])
            obs["ee_states"] = np.concatenate([obs["ee_pos"][()], obs["ee_ori"][()]], axis=1)
            actions = np.stack(ep["actions"])
            demo["actions"] = actions
            demo["robot_states"] = np.stack(ep["robot_states"])
            if ep["states"]:
                demo["states"] = np.stack(ep["states"])
                demo.attrs["init_state"] = ep["states"][0]
            done = np.zeros(len(actions), dtype=np.uint8)
            done[-1] = 1
            demo["dones"], demo["rewards"] = done, done.copy()
            demo.attrs.update(num_samples=len(actions), suite=ctx.suite, task_id=ctx.task_id,
                              init_index=ctx.init_index, instruction=ctx.instruction, seed=ctx.seed)
            data.attrs["num_demos"] = n + 1
            data.attrs["total"] = int(data.attrs["total"]) + len(actions)
        return path


    def close(self) -> None:
        """Drop an episode that never finished; no file is held open between episodes."""
        self._ep = None


def load_demos(path: str | Path) -> list[dict]:
    """Every demo under `path` (a recorder root or one .hdf5 file) as plain numpy dicts."""
    path = Path(path)
    files = sorted(path.rglob("*_demo.hdf5")) if path.is_dir() else [path]
    demos = []
    for file in files:
        with h5py.File(file, "r") as f:
            data = f["data"]
            for name in sorted(data, key=lambda s: int(s.split("_")[1])):
                g = data[name]
                demo = {key: g[key][()] for key in g if key != "obs"}
                demo["obs"] = {key: g["obs"][key][()] for key in g["obs"]}
                demo.update({k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()})
                demo["file"] = str(file)
                demos.append(demo)
    return demos
