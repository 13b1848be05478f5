"""The benchmark seam: what the harness asks of a benchmark's tasks and environments, and what a policy sees.

A learned policy reads an `Observation` only: upright camera images by role, the robot's proprio state in the
convention of the benchmark's datasets, the instruction. Where an image comes from (LIBERO renders upside down,
under its own key names) and how the state is assembled is the environment's business, so a new benchmark is
a new module here (and rows in suites.py), not edits in the policies. The simulator's own observation stays
reachable as `raw`, for what is tied to the benchmark by nature: the privileged scripted expert and the
recorder that writes the benchmark's dataset format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

PRIMARY = "primary"  # the third-person camera every VLA reads
WRIST = "wrist"  # the camera on the gripper
# The conventions a model's actions come in (`LoadedModel.action_convention`); a benchmark converts them to its own
# (`Benchmark.actions_to_env`) and back (`actions_from_env`), or refuses one it does not know.
ENV_ACTIONS = "env"  # already the benchmark's own (a model trained on its datasets as they are, e.g. openpi's pi0)
OPEN1_CLOSE0_GRIPPER = "open1_close0_gripper"  # OpenVLA's datasets: the last dim 1 = open, 0 = close


def _own_actions_only(actions: np.ndarray, convention: str) -> np.ndarray:
    if convention != ENV_ACTIONS:
        raise ValueError(f"this benchmark takes actions in its own convention only, not {convention!r}")
    return actions


@dataclass(frozen=True)
class Observation:
    images: Mapping[str, np.ndarray]  # camera role (PRIMARY, WRIST) -> upright HxWx3 uint8 image
    state: np.ndarray  # proprio vector, in the layout the benchmark's datasets (and the models trained on them) use
    instruction: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the simulator's own observation


@dataclass(frozen=True)
class Task:
    """A task of a suite; a benchmark's own tasks add what its environment needs (LIBERO: the BDDL file)."""

    suite: str
    task_id: int
    name: str
    instruction: str


class TaskEnv(Protocol):
    """One task's simulator, reused across that task's episodes."""

    task: Task

    @property
    def live(self) -> Any:
        """The simulator object itself: only privileged policies (EpisodeContext.env) may read it."""

    def start_episode(self, init_index: int) -> Observation:
        """Reset to init state `init_index` (and whatever settling the protocol asks for)."""

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        """Apply one action; returns (observation, success)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Benchmark:
    """A benchmark the harness runs: its suites' tasks, an environment per task, the versions its results
    depend on (recorded with every run)."""

    load_suite: Callable[[str], Sequence[Task]]
    # the task, the camera roles to render (maybe none); a benchmark that can also start episodes from placements its
    # own sampler draws (demonstrations that are not the test) takes `placement_seed=` too
    make_env: Callable[..., TaskEnv]
    versions: Callable[[], dict]
    # (a model's actions [n, dims], their convention) -> the benchmark's actions, and the inverse (an expert's
    # actions in the model's convention, for offline replay's normalisation)
    actions_to_env: Callable[[np.ndarray, str], np.ndarray] = _own_actions_only
    actions_from_env: Callable[[np.ndarray, str], np.ndarray] = _own_actions_only
