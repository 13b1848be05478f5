"""The Pruner interface between the pruning engine and the token-selection rules, and the pruner registry.

A pruner never sees the model: at construction it learns the model's shape (`ModelLayout`) and states in a
`PrunePlan` what the engine must compute for it (which layer's attention, from which query rows, which
embeddings, which action-attention layers). Per policy query the engine runs the plan's stages, calling
`select()` once per stage with a `StageInputs`, applies the returned `Selection`, and (if the plan asks for
action layers) calls `observe()` after decoding. `reset()` starts an episode.

Engine loop, in short::

    pruner = build_pruner(cfg, keep=0.25, layout=ModelLayout(num_layers=32, image_tokens=(256,)))
    pruner.reset(seed, episode)                      # per episode
    for stage_index, stage in enumerate(pruner.plan.stages):   # per query; no stages -> dense model
        run layers up to and including stage.layer, collecting what `stage` asks for
        sel = pruner.select(StageInputs(stage=stage_index, attention=..., ...))
        keep rows sel.kept[i] of image i (+ sel.merged[i]) for layers stage.layer+1 ..
    decode; if pruner.plan.action_layers: pruner.observe(action attention per image)
    info["pruning"] = [sel.to_record() for each stage]

All indices are per image and 0-based within that image's visual tokens; at the first stage the rows are the
original visual tokens, so `kept` are original visual indices (add the image's start offset for sequence
positions).

By concern: budget.py (the shared budget, top-k), plan.py (the data types between engine and pruner), options.py
(typed options, the cut's range check), base.py (the `Pruner` and `SingleCutPruner` base classes, the dense `none`),
registry.py (pruners by name). This package re-exports all of them: `from vla_pruner.pruning import Pruner`.

A new pruner is one module: a `Pruner` subclass (`SingleCutPruner` for one cut before `prune_layer`) with its
typed `Config`, found by name through `PRUNERS`: listed in `BUILT_IN` (this package), in `baselines/__init__.py`'s
`PRUNER_CLASSES` (the in-tree baselines: no re-install), declared as an entry point of group `vla_pruner.pruners`
(another package), or `register_pruner`-ed by code that imports it.
"""
from vla_pruner.pruning.budget import budget, top_k
from vla_pruner.pruning.plan import (
    HEX_DIGITS, KVReuse, MergedTokens, ModelLayout, PrunePlan, QueryContext, QueryKV, Rows,
    Selection, Stage, StageInputs, StageRows,
    hex_to_indices, indices_to_hex,
)
from vla_pruner.pruning.options import (
    DEFAULT_PRUNE_LAYER, SHARED_OPTIONS, DroppingConfig, PrunerConfig, check_choice, check_prune_layer, matches_type,
    type_name,
)
from vla_pruner.pruning.base import NoneConfig, NonePruner, Pruner, SingleCutPruner
from vla_pruner.pruning.registry import (
    BUILT_IN, ENTRY_POINT_GROUP, IN_TREE_TABLES, PRUNERS, PrunerRegistry, build_pruner, pruner_class, pruner_config,
    register_pruner,
)

__all__ = [
    "budget", "top_k", "HEX_DIGITS", "KVReuse", "MergedTokens", "ModelLayout", "PrunePlan", "QueryContext", "QueryKV", "Rows",
    "Selection", "Stage", "StageInputs", "StageRows", "hex_to_indices", "indices_to_hex", "DEFAULT_PRUNE_LAYER",
    "SHARED_OPTIONS", "DroppingConfig", "PrunerConfig", "check_choice", "check_prune_layer", "matches_type",
    "type_name", "NoneConfig", "NonePruner", "Pruner", "SingleCutPruner", "BUILT_IN", "ENTRY_POINT_GROUP",
    "IN_TREE_TABLES", "PRUNERS", "PrunerRegistry", "build_pruner", "pruner_class", "pruner_config", "register_pruner",
]
