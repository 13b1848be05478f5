"""`policy=vla`: a VLA model (group `model`) with a visual-token pruner (group `pruner`) at retention `keep`.

Model families differ in observation, decoding and action chunking; `cfg.model.family` picks the adapter.
Before a run, `check_vla_policy` checks what building it needs without loading weights (evaluate.config.validate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig

from evaluate.config import ConfigError
from evaluate.policy import Policy
from evaluate.policies.openvla import OPENVLA, build_openvla_policy
from evaluate.policies.openvla_oft import OPENVLA_OFT, build_openvla_oft_policy
from evaluate.policies.vla_checks import check_vla_model
from evaluate.policies.vla_model import FamilySpec


@dataclass(frozen=True)
class Family:
    build: Callable[[DictConfig], Policy]
    spec: FamilySpec


FAMILIES: dict[str, Family] = {
    OPENVLA.name: Family(build_openvla_policy, OPENVLA),
    OPENVLA_OFT.name: Family(build_openvla_oft_policy, OPENVLA_OFT),
}


def family_of(cfg: DictConfig) -> Family:
    family = cfg.model.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"model {cfg.model.name} has family '{family}'; valid families: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def check_vla_policy(cfg: DictConfig) -> None:
    check_vla_model(cfg, family_of(cfg).spec, [f.spec for f in FAMILIES.values()])


def build_vla_policy(cfg: DictConfig) -> Policy:
    return family_of(cfg).build(cfg)
