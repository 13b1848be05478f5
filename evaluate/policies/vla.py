"""`policy=vla`: a VLA model (group `model`) with a visual-token pruner (group `pruner`) at retention `keep`.

Model families differ in observation, decoding and action chunking; the record of `cfg.model.family` names the
adapter (`ModelFamily.policy`), so a family that reads and decodes like a built-in one needs no adapter of its own.
Before a run, `check_vla_policy` checks what building it needs without loading weights (evaluate.config.validate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig

from evaluate.config import ConfigError, build_checked_pruner
from evaluate.envs.base import Observation
from evaluate.policy import Policy
from evaluate.policies import openvla, openvla_oft, pi0
from evaluate.policies.vla_checks import check_vla_model
from vla_pruner.families import ModelFamily, family_names, model_family
from vla_pruner.models.preprocess import model_image
from vla_pruner.pruning import ModelLayout, Pruner


@dataclass(frozen=True)
class Adapter:
    """The harness side of a model family (observation -> model inputs -> env actions); the family's own facts
    are its vla_pruner.families.ModelFamily record."""

    build: Callable[[DictConfig], Policy]
    cameras: tuple[str, ...]  # the camera roles it reads, in the model's image order
    check: Callable[[DictConfig], None] | None = None  # its own pre-run check (default: the OpenVLA checkpoints')
    prepare: Callable[[Observation], Observation] | None = None  # its own frames (default: OpenVLA's model_image)
    # the pruner a run builds, refused where the policy cannot run it (default: as configured, on the layout)
    pruner: Callable[[DictConfig, float, ModelLayout], Pruner] = build_checked_pruner


ADAPTERS: dict[str, Adapter] = {
    "openvla": Adapter(openvla.build_openvla_policy, openvla.CAMERAS),
    "openvla_oft": Adapter(openvla_oft.build_openvla_oft_policy, openvla_oft.CAMERAS),
    "pi0": Adapter(pi0.build_pi0_policy, pi0.CAMERAS, check=pi0.check_pi0_policy, prepare=pi0.prepare_pi0_observation,
                   pruner=pi0.build_pi0_pruner),
}


def family_of(cfg: DictConfig) -> ModelFamily:
    family = cfg.model.get("family")
    if family not in family_names():
        raise ConfigError(f"model {cfg.model.name} has family '{family}'; valid families: {', '.join(family_names())}")
    return model_family(family)


def adapter_of(family: ModelFamily) -> Adapter:
    if family.policy not in ADAPTERS:
        raise ConfigError(f"model family {family.name} names policy adapter '{family.policy}'; valid adapters: "
                          f"{', '.join(ADAPTERS)}")
    return ADAPTERS[family.policy]


def family_pruner(family: ModelFamily, pruner_cfg, keep: float, layout: ModelLayout) -> Pruner:
    """The pruner a run of `family` builds on `layout` (ConfigError where its policy cannot run it);
    `evaluate.flops` counts with the same pruner."""
    return adapter_of(family).pruner(pruner_cfg, keep, layout)


def vla_cameras(cfg: DictConfig) -> tuple[str, ...]:
    return adapter_of(family_of(cfg)).cameras


def prepare_vla_observation(cfg: DictConfig, obs: Observation) -> Observation:
    """The model's frames (OpenVLA's: JPEG round trip, Lanczos to 224, `model_image`) of the cameras it reads."""
    adapter = adapter_of(family_of(cfg))
    if adapter.prepare is not None:
        return adapter.prepare(obs)
    return Observation({role: model_image(obs.images[role]) for role in vla_cameras(cfg)}, obs.state, obs.instruction)


def check_vla_policy(cfg: DictConfig) -> None:
    adapter = adapter_of(family_of(cfg))
    if adapter.check is not None:
        return adapter.check(cfg)
    check_vla_model(cfg, family_of(cfg), [model_family(name) for name in family_names()])


def build_vla_policy(cfg: DictConfig) -> Policy:
    return adapter_of(family_of(cfg)).build(cfg)
