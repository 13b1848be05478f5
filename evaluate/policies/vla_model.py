"""The `model` group of `policy=vla`: its typed fields and where its checkpoint is (what a model family's
checkpoint holds is its `vla_pruner.families.ModelFamily`). Shared by the policies, which load the checkpoint, and by their checks
(`evaluate.policies.vla_checks`), which read its files only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from evaluate.config import ConfigError, check_device_available
from evaluate.envs.vocabulary import libero_instructions
from vla_pruner.models.checkpoint import EXAMPLE_OVERRIDE, resolve_device_dtype
from vla_pruner.models.openvla.tiny import ensure_tiny_checkpoint


@dataclass
class OpenVLAModelConfig:
    """The fields of configs/model/openvla*.yaml (documented there)."""

    name: str
    family: str = "openvla"
    checkpoint: str | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)
    build_seed: int | None = None
    unnorm_key: str | None = None
    dtype: str = "auto"
    note: str = ""

    @classmethod
    def from_cfg(cls, model_cfg: DictConfig) -> "OpenVLAModelConfig":
        values = model_values(cls, model_cfg)
        seed = values.get("build_seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(f"model.build_seed={seed!r} must be an integer (or null for a checkpoint loaded as is)")
        return cls(**values)


def model_values(config_class, model_cfg: DictConfig) -> dict:
    """The `model` group as a dict, after refusing a field that `config_class` (a model family's typed model
    config) does not have."""
    values = OmegaConf.to_container(model_cfg, resolve=True)
    known = [f.name for f in fields(config_class)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown model config fields {unknown}; known: {known}")
    return values


def check_dtype_and_device(dtype: str, device: str) -> None:
    """model.dtype is one the loaders know, and the run's device is there (before any weights load)."""
    try:
        resolve_device_dtype("cpu", dtype)
    except ValueError as e:
        raise ConfigError(f"model.dtype: {e}") from None
    check_device_available(device)


def cache_root() -> Path:
    return Path(os.environ.get("VLA_PRUNER_CACHE", "~/.cache/vla_pruner")).expanduser()


def checkpoint_location(model: OpenVLAModelConfig, suite: str) -> str:
    """Explicit `checkpoint`, else (a tiny model) its cache directory, else the suite's entry in `checkpoints`.
    Builds nothing: the tiny model may not exist there yet."""
    if model.checkpoint:
        return model.checkpoint
    if model.build_seed is not None:
        return str(cache_root() / f"{model.name}-seed{model.build_seed}")
    if suite not in model.checkpoints:
        raise ConfigError(
            f"{model.name} has no checkpoint for suite {suite} (official ones: {', '.join(model.checkpoints)}); "
            f"point at one with {EXAMPLE_OVERRIDE}"
        )
    return model.checkpoints[suite]


def resolve_checkpoint_path(model: OpenVLAModelConfig, suite: str) -> str:
    """`checkpoint_location`, with a tiny model built there first when it is not yet."""
    location = checkpoint_location(model, suite)
    if model.build_seed is not None:
        return str(ensure_tiny_checkpoint(location, model.build_seed, libero_instructions()))
    return location
