"""FastV (Chen et al., ECCV 2024): keep the visual tokens the last prompt token attends to most at layer K-1,
drop the rest before layer K. Pruned once at prefill; decoding reuses the pruned cache."""
from __future__ import annotations

from dataclasses import dataclass

from vla_pruner.pruning import (
    ModelLayout, PrunePlan, Pruner, PrunerConfig, Selection, Stage, StageInputs, check_choice, check_prune_layer,
    register_pruner, top_k,
)


@dataclass(frozen=True)
class FastVConfig(PrunerConfig):
    source: str = "last"  # last = the last prompt row (FastV's rule); prefill = mean over all prefill rows
    prune_layer: int = 3

    def __post_init__(self):
        super().__post_init__()
        check_choice("source", self.source, ("last", "prefill"))


@register_pruner
class FastV(Pruner):
    name = "fastv"
    Config = FastVConfig
    config: FastVConfig

    def __init__(self, config: FastVConfig, keep: float, layout: ModelLayout):
        check_prune_layer(config.prune_layer, layout.num_layers)
        super().__init__(config, keep, layout)

    def make_plan(self) -> PrunePlan:
        return PrunePlan(stages=(Stage(layer=self.config.prune_layer - 1, rows=self.config.source),))

    def choose(self, inputs: StageInputs) -> Selection:
        kept = [top_k(a.float().mean(0), k).sort().values for a, k in zip(inputs.attention, self.budgets)]
        return Selection(kept=kept, num_rows=self.rows_per_image(inputs))
