"""The harness half of a model family: the few methods `VLAPolicy` (evaluate/policies/vla_policy.py) asks of it.

`VLAPolicy` owns everything a run does with any VLA: one slot per running episode, a pruner per slot, the burn-in
query, the timing stages, batching, `describe` and `normalize_actions`, and the conversion of the model's actions to
the benchmark's (`evaluate.envs.base.Benchmark.actions_to_env`). A family's adapter only says what is its own:

- `FamilyAdapter.check(cfg)`: what building the policy would trip over, told from the config and the checkpoint's
  files alone (a ConfigError line; no weights load);
- `FamilyAdapter.prepare(obs)`: the model's frames of the cameras it reads (`cameras`), weight-free: with
  `num_envs` > 1 the simulator workers run it;
- `FamilyAdapter.load(cfg)`: the model, as a `LoadedModel`, which
  - `episode(ctx)`: the per-episode inputs (the tokenised prompt; pi0's noise generator),
  - `query(episodes, observations, pruners, clock)`: answers a batch of prepared observations, one pruner per
    sample, laps `clock` at its stages (preprocess, vision, prefill, decode) and returns per sample the actions in
    its `action_convention`, the normalised actions and what the query recorded,
  - `normalize(actions, obs)`: the inverse of its un-normalisation (actions in its convention),
  - `describe()`: what it is (model, checkpoint, device, ...), saved with the run.
- `FamilyAdapter.pruner(options, keep, layout)` (optional): the pruner a run builds, refused where the family cannot
  run it (pi0 refuses VLA-Cache); default: as configured.

The adapter of family NAME is `evaluate.policies.NAME.ADAPTER` (a module of this package named for the family); a
family of another package declares its adapter as an entry point (group `evaluate.family_adapters`,
`NAME = "module:ADAPTER"`), and `register_adapter` adds one in the running process (a test).
"""
from __future__ import annotations

import os
from dataclasses import fields
from functools import lru_cache
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from evaluate.config import ConfigError, build_checked_pruner, check_device_available
from evaluate.envs.base import PRIMARY, Observation
from vla_pruner.entry_points import with_entry_points
from vla_pruner.models.checkpoint import resolve_device_dtype
from vla_pruner.models.preprocess import IMAGE_SIZE
from vla_pruner.pruning import ModelLayout, Pruner

ENTRY_POINT_GROUP = "evaluate.family_adapters"
BURN_IN_STATE_DIM = 8  # the burn-in's blank proprio vector (a model that reads the state reads this many)


class LoadedModel:
    """A family's model, loaded, as `VLAPolicy` drives it (see the module docstring)."""

    layout: ModelLayout  # what its pruners may know of it
    device: Any  # torch.device: the stopwatch waits for it
    action_convention: str  # of the actions `query` returns (evaluate.envs.base: ENV_ACTIONS, OPEN1_CLOSE0_GRIPPER)

    def episode(self, ctx) -> Any:
        raise NotImplementedError

    def batch_key(self, episode) -> Hashable | list:
        """Queries whose episodes share it are answered in one batch (OpenVLA: the prompt); default: all together."""
        return ()

    def query(self, episodes: Sequence[Any], observations: Sequence[Observation], pruners: Sequence[Pruner],
              clock) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        raise NotImplementedError

    def normalize(self, actions: np.ndarray, obs: Observation) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class FamilyAdapter:
    """One model family's adapter (see the module docstring)."""

    cameras: tuple[str, ...] = (PRIMARY,)  # the camera roles it reads, in the model's image order

    def check(self, cfg: DictConfig) -> None:
        raise NotImplementedError

    def prepare(self, obs: Observation) -> Observation:
        raise NotImplementedError

    def load(self, cfg: DictConfig) -> LoadedModel:
        raise NotImplementedError

    def pruner(self, options, keep: float, layout: ModelLayout | None) -> Pruner | None:
        return build_checked_pruner(options, keep, layout)

    def blank(self) -> Observation:
        """A prepared observation of nothing: what the burn-in query answers."""
        frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        return Observation({role: frame for role in self.cameras}, np.zeros(BURN_IN_STATE_DIM), "warm up")


_REGISTERED: dict[str, FamilyAdapter] = {}


def register_adapter(family: str, adapter: FamilyAdapter) -> FamilyAdapter:
    _REGISTERED[family] = adapter
    return adapter


@lru_cache(maxsize=1)
def _declared() -> dict[str, str]:
    return with_entry_points({}, ENTRY_POINT_GROUP)


def adapter_for(family: str) -> FamilyAdapter:
    """The adapter of model family `family`, found by its name (see the module docstring)."""
    if family in _REGISTERED:
        return _REGISTERED[family]
    target = _declared().get(family)
    if target is None and find_spec(f"{__package__}.{family}") is not None:
        target = f"{__package__}.{family}:ADAPTER"
    if target is None:
        raise ConfigError(f"model family {family} has no adapter in the harness: evaluate/policies/{family}.py "
                          f"(its ADAPTER), or an entry point in group {ENTRY_POINT_GROUP}")
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)


# ---------------------------------------------------------------------------------- shared by the adapters


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
    """Where the seeded tiny models are built ($VLA_PRUNER_CACHE, default ~/.cache/vla_pruner)."""
    return Path(os.environ.get("VLA_PRUNER_CACHE", "~/.cache/vla_pruner")).expanduser()
