"""`policy=vla`: a VLA model (group `model`) with a visual-token pruner (group `pruner`) at retention `keep`.

Model families differ in observation, decoding and action chunking; `cfg.model.family` picks the adapter.
"""
from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from evaluate.config import ConfigError
from evaluate.policy import Policy, register_policy
from evaluate.policies.openvla import build_openvla_policy
from evaluate.policies.openvla_oft import build_openvla_oft_policy

FAMILIES: dict[str, Callable[[DictConfig], Policy]] = {
    "openvla": build_openvla_policy,
    "openvla_oft": build_openvla_oft_policy,
}


@register_policy("vla")
def build_vla_policy(cfg: DictConfig) -> Policy:
    family = cfg.model.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"model {cfg.model.name} has family '{family}'; valid families: {', '.join(FAMILIES)}")
    return FAMILIES[family](cfg)
