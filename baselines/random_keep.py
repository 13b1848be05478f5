"""Random pruning: a uniformly random M_keep visual tokens per image and query; the generator is seeded by
(run seed, episode, query index), so a run repeats exactly and no two queries share a draw by accident."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from vla_pruner.pruning import DEFAULT_PRUNE_LAYER, DroppingConfig, PrunePlan, Selection, SingleCutPruner, StageInputs


def query_seed(seed: int, episode: int | str, step: int) -> int:
    """A 63-bit seed that differs for every (seed, episode, step)."""
    digest = hashlib.blake2b(f"{seed},{episode},{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class RandomConfig(DroppingConfig):
    prune_layer: int = DEFAULT_PRUNE_LAYER


class RandomKeep(SingleCutPruner):
    name = "random"
    Config = RandomConfig
    config: RandomConfig

    def make_plan(self) -> PrunePlan:
        return PrunePlan(stages=(self.cut(),))  # needs no scores

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.seed, self.episode = seed, episode

    def choose(self, inputs: StageInputs) -> Selection:
        generator = torch.Generator().manual_seed(query_seed(self.seed, self.episode, self.query))
        kept = [torch.randperm(m, generator=generator)[:k].sort().values
                for m, k in zip(self.layout.image_tokens, self.budgets)]
        return Selection(kept=kept, num_rows=list(self.layout.image_tokens))
