"""Training samples for an 8-step-chunk policy: per frame, the model-view images of each camera, the robot state,
and the next 8 actions of the same episode (the last action repeated past the episode's end, as OFT's data
pipeline clamps its chunk indices)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass
class ChunkData:
    frames: np.ndarray  # [N, cameras, 224, 224, 3] uint8 (a memmap is fine): the model's view before the crop
    states: np.ndarray  # [N, 8] robot state (the benchmark's proprio convention), raw
    actions: np.ndarray  # [N, 7] actions in the model's convention (gripper 0 close .. 1 open), raw
    episode: np.ndarray  # [N] episode index of each frame (frames of an episode are contiguous, in order)
    instructions: list[str]  # per episode

    def __post_init__(self):
        n = len(self.frames)
        if not (len(self.states) == len(self.actions) == len(self.episode) == n):
            raise ValueError("frames, states, actions and episode must have one row per frame")
        if np.any(np.diff(self.episode) < 0):
            raise ValueError("frames of an episode must be contiguous and episodes in order")
        self.episode_end = np.searchsorted(self.episode, self.episode, side="right") - 1  # last frame's index

    @property
    def episodes(self) -> int:
        return len(self.instructions)

    def chunk(self, index: np.ndarray, length: int) -> np.ndarray:
        """[n, length, 7] the actions from each frame on, clamped at its episode's last frame."""
        steps = np.minimum(index[:, None] + np.arange(length)[None], self.episode_end[index][:, None])
        return self.actions[steps]

    def frames_of(self, episodes: np.ndarray) -> np.ndarray:
        """Indices of every frame of the given episodes."""
        return np.flatnonzero(np.isin(self.episode, episodes))


def split_episodes(episodes: int, validation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) episode indices: `validation` episodes held out, drawn with `seed`."""
    if not 0 <= validation < episodes:
        raise ValueError(f"validation={validation} must be from 0 to {episodes - 1}: the held-out episodes must leave "
                         f"at least one of {episodes} to train on")
    order = np.random.default_rng(seed).permutation(episodes)
    return np.sort(order[validation:]), np.sort(order[:validation])


def batches(data: ChunkData, frames: np.ndarray, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch over `frames` in random order, as batches whose frames share one instruction (a batch is one
    prompt); the last, smaller batch of each instruction included."""
    by_prompt: dict[str, list[np.ndarray]] = {}
    for prompt in dict.fromkeys(data.instructions):
        mine = frames[np.isin(data.episode[frames], [e for e, p in enumerate(data.instructions) if p == prompt])]
        mine = rng.permutation(mine)
        by_prompt[prompt] = [mine[i:i + size] for i in range(0, len(mine), size)]
    order = [batch for group in by_prompt.values() for batch in group]
    for i in rng.permutation(len(order)):
        yield order[i]
