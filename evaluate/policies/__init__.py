"""The policies `policy=NAME` selects, in one explicit table (no registration by import side effects).

A new policy is a module here and a row below; the CLI (evaluate/__main__.py) checks a run's policy with
`validate(cfg, POLICIES)` and the runner builds it with `build_policy`.
"""
from __future__ import annotations

from evaluate.envs.base import PRIMARY, WRIST
from evaluate.policies.noop import build_noop
from evaluate.policies.scripted import make_scripted
from evaluate.policies.vla import build_vla_policy, check_vla_policy, prepare_vla_observation, vla_cameras
from evaluate.policy import Policy, PolicyEntry

POLICIES: dict[str, PolicyEntry] = {
    "vla": PolicyEntry(build_vla_policy, check=check_vla_policy, cameras=vla_cameras, prepare=prepare_vla_observation),
    "scripted": PolicyEntry(make_scripted, beside_simulator=True),
    "noop": PolicyEntry(build_noop, beside_simulator=True),
}


def build_policy(cfg) -> Policy:
    """`cfg.policy.name`'s policy (weights load here)."""
    return POLICIES[cfg.policy.name].build(cfg)


def cameras_for(cfg) -> tuple[str, ...]:
    """The cameras a run renders: its policy's, the primary one for videos, both for LIBERO demos."""
    wanted = set(POLICIES[cfg.policy.name].cameras(cfg))
    if cfg.video:
        wanted.add(PRIMARY)
    if cfg.record_demos:
        wanted |= {PRIMARY, WRIST}
    return tuple(role for role in (PRIMARY, WRIST) if role in wanted)
