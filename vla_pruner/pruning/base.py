"""The Pruner interface (budgets, plan, dense warm-up, timing; `SingleCutPruner` for one cut before K) and the dense
`none` pruner."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from vla_pruner.pruning.budget import budget
from vla_pruner.pruning.options import PrunerConfig, check_prune_layer
from vla_pruner.pruning.plan import (ModelLayout, PrunePlan, QueryContext, QueryKV, Selection, Stage, StageInputs,
                                     StageRows)


class Pruner:
    """Base class: budgets, plan, timing. Subclasses define `Config`, `make_plan()` and `choose()`."""

    name: ClassVar[str]
    Config: ClassVar[type[PrunerConfig]] = PrunerConfig

    def __init__(self, config: PrunerConfig, keep: float, layout: ModelLayout):
        self.config = config
        self.keep = keep
        self.layout = layout
        self.check_layout()
        self.budgets = self.image_budgets()
        prunes = any(b < m for b, m in zip(self.budgets, layout.image_tokens))
        self.plan = self.make_plan() if prunes else PrunePlan()
        self.reset()

    def check_layout(self) -> None:
        """Refuse options that do not fit the model (before budgets and plan are made)."""

    def image_budgets(self) -> tuple[int, ...]:
        """Visual tokens each image keeps: the shared round(keep x M_i) (a method with its own split says its own)."""
        return tuple(budget(self.keep, m) for m in self.layout.image_tokens)

    def make_plan(self) -> PrunePlan:
        """The plan when the budget drops tokens (keep=1.0 always gets the dense plan)."""
        raise NotImplementedError

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        """Start an episode: (re)sets per-episode state, also once at construction. `seed` = the run's seed,
        `episode` = an id unique within the run, e.g. "libero_spatial/3/17" (suite/task/init state); only
        seeded pruners use them. Subclasses with state of their own call super().reset first."""
        self.query = -1  # the episode's current query (stage 0 of select() starts the next)
        self.last_kept: list[torch.Tensor] | None = None  # the current query's last selection
        self.context: QueryContext | None = None  # the current query's (`begin_query`)

    def begin_query(self, context: QueryContext) -> None:
        """Before each policy query (dense warm-up ones too): what the policy knows of it beyond the model's inputs.
        Subclasses whose rule reads it (VLA-ADP's motion gate) call super() first."""
        self.context = context

    @property
    def dense_warmup(self) -> int:
        """Queries per episode that run dense before the pruner's own rule (a dropping pruner's option)."""
        return getattr(self.config, "dense_warmup", 0)

    @property
    def in_dense_warmup(self) -> bool:
        return self.query < self.dense_warmup

    def select(self, inputs: StageInputs) -> Selection:
        """Choose the tokens of one stage (timed; on CUDA the clock waits for the device): the rule's choice, or
        every row during the episode's dense warm-up."""
        if not 0 <= inputs.stage < len(self.plan.stages):
            raise ValueError(f"stage {inputs.stage} not in this pruner's plan ({len(self.plan.stages)} stages)")
        self.check_inputs(inputs)
        if inputs.stage == 0:
            self.query += 1
        start = time.perf_counter()
        selection = self.dense(inputs, warmup=True) if self.in_dense_warmup else self.choose(inputs)
        if any(k.is_cuda for k in selection.kept):
            torch.cuda.synchronize()
        selection.select_ms = (time.perf_counter() - start) * 1e3
        selection.stage = inputs.stage
        self.last_kept = selection.kept
        return selection

    def choose(self, inputs: StageInputs) -> Selection:
        raise NotImplementedError

    def check_inputs(self, inputs: StageInputs) -> None:
        """Fail clearly when the engine left out something the stage asked for."""
        stage = self.plan.stages[inputs.stage]
        wanted = {"attention": stage.rows is not None, "visual_embeddings": stage.visual_embeddings,
                  "text_embeddings": stage.text_embeddings, "hidden_states": stage.hidden_states,
                  "frames": stage.frames, "qk_scores": stage.qk_scores}
        missing = [name for name, needed in wanted.items() if needed and getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"{self.name} stage {inputs.stage} needs {', '.join(missing)} (see its plan: {stage})")

    def observe(self, action_attention: Sequence[torch.Tensor]) -> None:
        """After decoding, when plan.action_layers is not empty: per image, the attention the action queries
        paid to the visual tokens present in those layers (in `kept` order of the query's last selection, or
        all M_i original tokens), averaged over heads, action queries and plan.action_layers."""

    def keep_query(self, query: QueryKV) -> None:
        """After each query, when plan.reuse is set: what the next query of the episode may reuse."""

    def stored_query(self) -> QueryKV | None:
        """Before a query's first reusing layer, when plan.reuse is set: the previous query's `QueryKV` (None: the
        episode's first query, which has nothing to reuse)."""
        return None

    def schedule(self) -> tuple[StageRows, ...]:
        """Per stage of the plan, the rows it leaves of each image once warm: its budgets (pruners whose stages
        leave other counts, such as progressive SparseVLM or VLA-Cache, say theirs)."""
        return tuple(StageRows(stage.layer, self.budgets) for stage in self.plan.stages)

    def describe(self) -> dict[str, Any]:
        """Static facts saved with the run."""
        return {"name": self.name, "keep": self.keep, "budgets": list(self.budgets),
                **dataclasses.asdict(self.config),
                "stage_layers": [s.layer for s in self.plan.stages],
                "observe_layers": list(self.plan.action_layers)}

    # helpers for subclasses
    def dense(self, inputs: StageInputs, warmup: bool = False) -> Selection:
        rows = self.rows_per_image(inputs)
        return Selection(kept=[torch.arange(n, device=self.device(inputs)) for n in rows], num_rows=rows,
                         warmup=warmup)

    def rows_per_image(self, inputs: StageInputs) -> list[int]:
        if inputs.attention is not None:
            return [a.shape[-1] for a in inputs.attention]
        for per_image in (inputs.visual_embeddings, inputs.hidden_states):
            if per_image is not None:
                return [t.shape[0] for t in per_image]
        return list(self.layout.image_tokens)  # a stage that asked for nothing sees the original tokens

    @staticmethod
    def device(inputs: StageInputs) -> torch.device:
        for per_image in (inputs.attention, inputs.visual_embeddings, inputs.hidden_states):
            if per_image is not None:
                return per_image[0].device
        return torch.device("cpu")


class SingleCutPruner(Pruner):
    """Base of the pruners that cut once, before layer K = `config.prune_layer` (an int option of their config):
    layers 0..K-1 see every token and the cut scores with layer K-1's own attention. Owns K's check against the
    model and the stage's layer; subclasses say what the cut needs (`cut(rows=..., ...)` in `make_plan`)."""

    @property
    def cuts_once(self) -> bool:
        """Whether this configuration cuts once (a pruner with other modes, such as SparseVLM's progressive
        one, says no for those, and checks its own layers)."""
        return True

    def check_layout(self) -> None:
        super().check_layout()
        if self.cuts_once:
            check_prune_layer(self.config.prune_layer, self.layout.num_layers)

    def cut(self, **needs: Any) -> Stage:
        """The stage of the cut before layer K, asking for `needs` (the other `Stage` fields)."""
        return Stage(layer=self.config.prune_layer - 1, **needs)


@dataclass(frozen=True)
class NoneConfig(PrunerConfig):
    pass


class NonePruner(Pruner):
    """The dense model: an empty plan, so the engine never probes or prunes."""

    name = "none"
    Config = NoneConfig

    def __init__(self, config: PrunerConfig, keep: float, layout: ModelLayout):
        super().__init__(config, 1.0, layout)  # the shared keep does not apply to the dense model

    def make_plan(self) -> PrunePlan:
        return PrunePlan()
