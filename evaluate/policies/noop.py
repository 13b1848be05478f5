"""`policy=noop`: holds still with the gripper open. Not a learned policy.

Useful on its own: it checks the simulator, the result store and resume without any model, and its
runs measure pure simulator throughput.
"""
from __future__ import annotations

import numpy as np

from evaluate.envs.base import Observation
from evaluate.policy import EpisodeContext, PolicyOutput

HOLD_STILL = np.array([[0, 0, 0, 0, 0, 0, -1]], dtype=np.float64)


class NoopPolicy:
    name = "noop"

    def reset(self, ctx: EpisodeContext) -> None:
        pass

    def act(self, obs: Observation) -> PolicyOutput:
        return PolicyOutput(actions=HOLD_STILL.copy())

    def describe(self) -> dict:
        return {"policy": "noop", "note": "not a learned policy: holds still; success rate is meaningless"}


def build_noop(cfg) -> NoopPolicy:
    return NoopPolicy()
