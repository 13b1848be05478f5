"""The Policy interface every controller plugs into, and the policy registry.

A policy sees raw LIBERO observations (the env's dict) and returns a chunk of env-ready actions
(OpenVLA: one action per query; OpenVLA-OFT: eight, executed open loop). What a query cost or chose
(timings, kept tokens, ...) goes into `PolicyOutput.info` and lands in the episode record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


@dataclass
class EpisodeContext:
    """What a policy may know about the episode it is about to run."""

    suite: str
    task_id: int
    instruction: str
    init_index: int
    seed: int
    env: Any = None  # the live LIBERO env; only privileged policies (scripted expert) may read it


@dataclass
class PolicyOutput:
    actions: np.ndarray  # [n, 7] float, env convention (gripper -1 open / +1 close)
    info: dict = field(default_factory=dict)  # per-query stats, JSON-serialisable


class Policy(Protocol):
    name: str

    def reset(self, ctx: EpisodeContext) -> None:
        """Start a new episode (clears per-episode state such as a pruner's history)."""

    def act(self, obs: dict) -> PolicyOutput:
        """One policy query on one observation."""

    def describe(self) -> dict:
        """Static facts about the policy saved with the run (model name, checkpoint, warnings)."""


class TaskNotSupported(Exception):
    """Raised by `Policy.reset` for a task the policy cannot attempt; the episode is recorded as skipped."""


PolicyFactory = Callable[..., Policy]
PolicyCheck = Callable[[Any], None]
POLICIES: dict[str, PolicyFactory] = {}
# Per policy, what its factory will need, checked without loading weights or building an environment, so that
# a bad value fails before a run starts (raises evaluate.config.ConfigError).
POLICY_CHECKS: dict[str, PolicyCheck] = {}


def register_policy(name: str, check: PolicyCheck | None = None) -> Callable[[PolicyFactory], PolicyFactory]:
    def deco(factory: PolicyFactory) -> PolicyFactory:
        POLICIES[name] = factory
        if check is not None:
            POLICY_CHECKS[name] = check
        return factory

    return deco


def check_policy(cfg) -> None:
    """Run `cfg.policy.name`'s registered check (policies without one need nothing beyond the config schema)."""
    import evaluate.policies  # noqa: F401  (registers the built-in policies)

    check = POLICY_CHECKS.get(cfg.policy.name)
    if check is not None:
        check(cfg)


def build_policy(cfg) -> Policy:
    """Instantiate `cfg.policy.name` from the registry (policy modules register themselves on import)."""
    import evaluate.policies  # noqa: F401  (registers the built-in policies)

    return POLICIES[cfg.policy.name](cfg)
