"""One record per model family: what everything outside the model needs to know of it.

The policies (checkpoint checks, statistics, pruner layout), the FLOPs counter (sequence shape, architecture
without weights) and the run checks all read a family's `ModelFamily`, so a new family is its model module with
its record (plus a policy adapter in the harness and a model YAML), not edits in a handful of tables.
Built-in families are listed by name here and imported on first use; `register_family` adds one defined
elsewhere (a test module, a plugin).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable

VISUAL_TOKENS_PER_IMAGE = 256


@dataclass(frozen=True)
class ModelFamily:
    name: str  # the `family` of configs/model/*.yaml
    num_images: int  # images per query, VISUAL_TOKENS_PER_IMAGE visual tokens each
    decode_steps: int  # single-token cached LLM steps after the prefill (OpenVLA: 6 more action tokens)
    prefill_logit_rows: int  # LM-head rows computed at the end of the prefill
    extra_tokens: int  # LLM inputs beyond prompt and visual tokens (OFT: proprio, 8x7 action slots, stop token)
    part_files: tuple[str, ...]  # glob patterns of files only this family's checkpoints hold, exactly one each
    default_unnorm_key: Callable[[str], str]  # suite name -> statistics key, when model.unnorm_key is null
    select_stats: Callable[[dict, str], Any]  # the statistics the policy reads; ValueError when absent
    tiny_norm_stats: Callable[[], dict]  # the statistics a tiny (seeded) model of this family is built with
    official_config: Callable[[], dict]  # config.json of the official checkpoints (dims without weights)
    tiny_config: Callable[[], dict]  # config.json of the seeded tiny model (`model.build_seed` set)

    def unnorm_key(self, explicit: str | None, suite: str) -> str:
        return explicit or self.default_unnorm_key(suite)

    def image_tokens(self) -> tuple[int, ...]:
        """Visual tokens per image, in sequence order (what `vla_pruner.pruning.ModelLayout` takes)."""
        return (VISUAL_TOKENS_PER_IMAGE,) * self.num_images


_BUILT_IN = {
    "openvla": "vla_pruner.models.openvla:FAMILY",
    "openvla_oft": "vla_pruner.models.openvla_oft:FAMILY",
    "pi0": "vla_pruner.models.pi0:FAMILY",
}
_REGISTERED: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    if family.name in _BUILT_IN or family.name in _REGISTERED:
        raise ValueError(f"model family {family.name!r} registered twice")
    _REGISTERED[family.name] = family
    return family


def family_names() -> list[str]:
    return [*_BUILT_IN, *_REGISTERED]


def model_family(name: str | None) -> ModelFamily:
    """The record of family `name`; ValueError naming the known families otherwise."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILT_IN:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(family_names())}")
    module, attribute = _BUILT_IN[name].split(":")
    return getattr(import_module(module), attribute)
