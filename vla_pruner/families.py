"""One record per model family: what everything outside the model needs to know of it.

The pruner layout, the FLOPs counter (its cost: architecture without weights and MACs), the pruner options'
per-model defaults and the report all read a family's `ModelFamily`, so a new family is one package
`vla_pruner/models/<family>/` holding its record (`family.py`), plus the harness's adapter of it and its model YAML,
not edits in a handful of tables. The record names nothing of the harness: the harness finds the family's adapter
by the family's name. Built-in families are the packages of vla_pruner/models/ that hold a `family.py` (found by
convention, imported on first use); another package declares its families as entry points (group `vla_pruner.model_families`, "module:ATTRIBUTE" of a
`ModelFamily`) and ships its model YAML through a Hydra search-path plugin; `register_family` adds one defined in
the running process (a test module).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from vla_pruner.entry_points import load_declared, with_entry_points
from vla_pruner.pruning import DEFAULT_PRUNE_LAYER, ModelLayout

if TYPE_CHECKING:
    from vla_pruner.macs import ModelCost

VISUAL_TOKENS_PER_IMAGE = 256  # a 224 px image in 14 px patches, every family's visual budget per image
# Pruner options whose default depends on the model: each pruner group file refers to them as
# ${model_default:OPTION}; these are the values of every family that does not set its own (`pruner_defaults`).
PRUNER_OPTION_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "prune_layer": DEFAULT_PRUNE_LAYER,  # K: layers 0..K-1 see every token, K.. only the kept ones
    "fastv_source": "last",  # FastV's scoring rows
    # the released VLA-Pruner code (configs/pruner/vla_released.yaml): the Feb-2026 OpenVLA scripts rank by the last
    # prompt row with the newest history entry weighted least
    "released_semantic_source": "last",
    "released_temporal_order": "reversed",
    "vla_cache_eviction_top_k": 120,  # VLA-Cache's eviction: the released OpenVLA code never reuses the 120 most attended
    "gated_vla_cache_margin_threshold": 0.65,  # Gated VLA-Cache's gate: the released OpenVLA threshold
})


@dataclass(frozen=True)
class ModelFamily:
    """What every family has; what only some families have (OpenVLA's decode steps, checkpoint part files,
    statistics keys) is their package's own, reached through `cost` (e.g. `vla_pruner.models.openvla.cost`)."""

    name: str  # the `family` of configs/model/*.yaml
    num_images: int  # images per query, VISUAL_TOKENS_PER_IMAGE visual tokens each: the layout pruners see
    cost: Callable[[Mapping, "ModelFamily"], ModelCost]  # (cfg.model node, this record) -> dims without weights, MACs
    pruner_defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)  # its own values of PRUNER_OPTION_DEFAULTS' options
    model_pruner_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)  # by model name: over the family's
    paper_table: str | None = None  # the paper's own table of this family's rows (pi0: "table4"), beside Table 1

    def image_tokens(self) -> tuple[int, ...]:
        """Visual tokens per image, in sequence order (what `vla_pruner.pruning.ModelLayout` takes)."""
        return (VISUAL_TOKENS_PER_IMAGE,) * self.num_images

    def layout(self, num_layers: int) -> ModelLayout:
        """What a pruner may know of a model of this family with `num_layers` prunable layers."""
        return ModelLayout(num_layers=num_layers, image_tokens=self.image_tokens())

    def model_cost(self, model_cfg: Mapping) -> ModelCost:
        """The cost of the model a `cfg.model` node of this family describes, read without weights."""
        return self.cost(model_cfg, self)

    def pruner_default(self, option: str, model: str | None = None) -> Any:
        """A model-dependent pruner option's default for model `model` of this family."""
        return {**PRUNER_OPTION_DEFAULTS, **self.pruner_defaults,
                **self.model_pruner_defaults.get(model, {})}[option]


ENTRY_POINT_GROUP = "vla_pruner.model_families"
_REGISTERED: dict[str, ModelFamily] = {}


@lru_cache(maxsize=1)
def _declared() -> dict[str, str]:
    """name -> "module:ATTRIBUTE": the built-in families (each package of vla_pruner/models/ with a family.py,
    found by convention), then those installed packages declare."""
    import pkgutil
    from importlib.util import find_spec

    import vla_pruner.models as models

    built_in = {m.name: f"vla_pruner.models.{m.name}.family:FAMILY" for m in pkgutil.iter_modules(models.__path__)
                if m.ispkg and find_spec(f"vla_pruner.models.{m.name}.family") is not None}
    return with_entry_points(dict(sorted(built_in.items())), ENTRY_POINT_GROUP)


def register_family(family: ModelFamily) -> ModelFamily:
    if family.name in _declared() or family.name in _REGISTERED:
        raise ValueError(f"model family {family.name!r} registered twice")
    _REGISTERED[family.name] = family
    return family


def family_names() -> list[str]:
    return [*_declared(), *_REGISTERED]


def model_family(name: str | None) -> ModelFamily:
    """The record of family `name`; ValueError naming the known families otherwise."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _declared():
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(family_names())}")
    return load_declared("model family", name, _declared()[name])
