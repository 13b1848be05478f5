"""The `model` group of a model of the OpenVLA architecture (openvla, openvla_oft): its typed fields and where its
checkpoint is (what its checkpoint holds is its family's `vla_pruner.models.openvla.cost.OpenVLAVariant`). Shared
by the adapters, which load the checkpoint, and by their checks (`evaluate.policies.openvla_checks`), which read its
files only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from evaluate.errors import ConfigError
from evaluate.envs.libero_conventions import tiny_openvla_stats
from evaluate.envs.vocabulary import libero_instructions
from evaluate.policies.adapter import cache_root, model_values
from vla_pruner.models.checkpoint import EXAMPLE_OVERRIDE
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
    """`checkpoint_location`, with a tiny model built there first when it is not yet (LIBERO's vocabulary and
    statistics)."""
    location = checkpoint_location(model, suite)
    if model.build_seed is not None:
        return str(ensure_tiny_checkpoint(location, model.build_seed, libero_instructions(), tiny_openvla_stats()))
    return location
