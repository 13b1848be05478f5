"""FastV (Chen et al., ECCV 2024): keep the visual tokens the last prompt token attends to most at layer K-1,
drop the rest before layer K. Pruned once at prefill; decoding reuses the pruned cache."""
from __future__ import annotations

from dataclasses import dataclass

from vla_pruner.pruning import (
    DEFAULT_PRUNE_LAYER, DroppingConfig, PrunePlan, Selection, SingleCutPruner, StageInputs, check_choice, top_k,
)


@dataclass(frozen=True)
class FastVConfig(DroppingConfig):
    source: str = "last"  # last = the last prompt row (FastV's rule); prefill = mean over all prefill rows;
    # text = mean over the prompt's language rows after the image
    prune_layer: int = DEFAULT_PRUNE_LAYER

    def __post_init__(self):
        super().__post_init__()
        check_choice("source", self.source, ("last", "prefill", "text"))


class FastV(SingleCutPruner):
    name = "fastv"
    Config = FastVConfig
    config: FastVConfig

    def make_plan(self) -> PrunePlan:
        return PrunePlan(stages=(self.cut(rows=self.config.source),))

    def choose(self, inputs: StageInputs) -> Selection:
        kept = [top_k(a.float().mean(0), k).sort().values for a, k in zip(inputs.attention, self.budgets)]
        return Selection(kept=kept, num_rows=self.rows_per_image(inputs))
