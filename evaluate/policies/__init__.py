"""The policies `policy=NAME` selects, in one explicit table (no registration by import side effects).

A new policy is a module here and a row below; the CLI (evaluate/__main__.py) checks a run's policy with
`validate(cfg, POLICIES)` and the runner builds it with `build_policy`.
"""
from __future__ import annotations

from evaluate.envs.base import PRIMARY, WRIST
from evaluate.policies.noop import build_noop
from evaluate.policies.remote import build_remote, check_remote, remote_cameras
from evaluate.policies.scripted import make_scripted
from evaluate.policy import Policy, PolicyEntry


def _vla(name: str):
    """evaluate.policies.vla_policy's function `name`, imported at its first call: a noop or scripted run (most of
    the simulator tests, every worker process) then never imports the model code and transformers, seconds each."""
    def call(*args, **kwargs):
        from evaluate.policies import vla_policy

        return getattr(vla_policy, name)(*args, **kwargs)
    return call


POLICIES: dict[str, PolicyEntry] = {
    "vla": PolicyEntry(_vla("build_vla_policy"), check=_vla("check_vla_policy"), cameras=_vla("vla_cameras"),
                       prepare=_vla("prepare_vla_observation"), uses_model=True),
    "scripted": PolicyEntry(make_scripted, beside_simulator=True, takes_action_noise=True),
    "noop": PolicyEntry(build_noop, beside_simulator=True),
    # a vla-eval model server's policy (python -m evaluate.serve's, or anyone's): one connection per simulator worker
    "remote": PolicyEntry(build_remote, check=check_remote, beside_simulator=True, cameras=remote_cameras),
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
