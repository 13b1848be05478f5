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

A new pruner is one module: a `Pruner` subclass (`SingleCutPruner` for one cut before `prune_layer`) with its
typed `Config`, found by name through `PRUNERS`: listed in `BUILT_IN` (this package), declared as an entry point
of group `vla_pruner.pruners` (another package, e.g. baselines), or `register_pruner`-ed by code that imports it.
"""
from __future__ import annotations

import dataclasses
import math
import time
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch

from vla_pruner.entry_points import load_declared, with_entry_points

Rows = Literal["prefill", "last", "text"]


# ----------------------------------------------------------------------------------------------- budgets


def budget(keep: float, num_tokens: int) -> int:
    """Visual tokens an image keeps: round(keep * M), half rounded up. Shared by every pruner so that all
    methods compare at identical token counts."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep={keep!r} must be in (0, 1]")
    k = min(num_tokens, math.floor(keep * num_tokens + 0.5))
    if k < 1:
        raise ValueError(f"keep={keep!r} keeps no token of an image with {num_tokens} visual tokens")
    return k


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, ties broken towards the lower index (torch.topk does not promise
    an order among ties; runs must be reproducible)."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]


# ------------------------------------------------------------------------------------ engine <-> pruner


@dataclass(frozen=True)
class ModelLayout:
    """The only facts about the model a pruner may use."""

    num_layers: int  # decoder layers L of the LLM
    image_tokens: tuple[int, ...]  # visual tokens per image, in sequence order: OpenVLA (256,), OFT (256, 256)

    def __post_init__(self):
        if self.num_layers < 2 or not self.image_tokens or min(self.image_tokens) < 1:
            raise ValueError(f"implausible model layout {self}")


@dataclass(frozen=True)
class Stage:
    """One pruning point. The engine runs layers 0..layer on the current tokens, scores with `layer`'s own
    attention, and layers layer+1.. see only the tokens `select()` keeps (for a prune layer K: layer = K-1)."""

    layer: int
    # query rows whose head-averaged attention to the visual keys `select()` needs (None: no attention):
    # "prefill" = all prefill query rows, "last" = the last prompt row (the one that emits action token 1),
    # "text" = each prompt token after the visual block (after OFT's proprio token) up to and including 29871.
    rows: Rows | None = None
    visual_embeddings: bool = False  # LLM input embeddings (projector outputs) of the current visual rows
    text_embeddings: bool = False  # LLM input embeddings of the "text" rows
    hidden_states: bool = False  # `layer`'s output hidden states of the current visual rows (token merging)
    frames: bool = False  # this query's preprocessed images (uint8 [H, W, 3] per image, the model's 224 view)


@dataclass(frozen=True)
class StageRows:
    """What one stage of a plan leaves, once the pruner's history is warm: per image, the visual rows (kept +
    merged, or still computed under KV reuse) that the layers after `layer` run on. The analytic cost reads these."""

    layer: int
    rows: tuple[int, ...]


@dataclass(frozen=True)
class KVReuse:
    """The plan of a pruner that carries keys/values from one query to the next (VLA-Cache) instead of deleting
    tokens: a visual row a stage leaves out stops being a QUERY from the next layer on, but stays a key, with the
    key/value the previous query left at its position (`QueryKV`, which the engine hands `keep_query()` after
    every query and reads back from `stored_query()` before the next)."""

    attention_layer: int  # the layer whose text -> visual attention `QueryKV.text_attention` holds
    bidirectional: bool = False  # prefill without the causal mask (the released VLA-Cache code's behaviour)
    decode_at_zero: bool = False  # decode steps of a reusing query at RoPE position 0 (released VLA-Cache code)


@dataclass
class QueryKV:
    """What one query leaves a KV-reusing pruner for the next query of its episode."""

    keys: list[torch.Tensor]  # per layer [kv_heads, S, head_dim]: every prompt position's key (reused: carried)
    values: list[torch.Tensor]
    entropy: torch.Tensor  # [L] per layer: mean over the rows it ran of their head-averaged attention's entropy
    text_attention: list[torch.Tensor]  # per image [M_i]: attention_layer's head-averaged attention from the
    # text rows to the image's visual tokens, mean over the text rows


@dataclass(frozen=True)
class PrunePlan:
    """Everything the engine must compute for a pruner, fixed when the pruner is built."""

    stages: tuple[Stage, ...] = ()  # empty: the model runs dense, select() is never called
    # layers whose action-query attention observe() needs, averaged over these layers; empty: no observe()
    action_layers: tuple[int, ...] = ()
    reuse: KVReuse | None = None  # set: rows a stage leaves out are reused keys, not deleted tokens
    # True: every layer runs its rows at RoPE positions 0..n-1 and decoding continues from n (DivPrune's code,
    # which prunes before the LLM); False: rows keep their original position ids
    renumber_positions: bool = False


@dataclass
class StageInputs:
    """What the engine hands `select()` at one stage; fields the stage did not ask for stay None.

    Per-image lists follow `ModelLayout.image_tokens`; n_i = current visual rows of image i (M_i at stage 0).
    """

    stage: int  # index into plan.stages; stage 0 starts a new policy query
    # [R, n_i] head-averaged attention probabilities from the stage's query rows to image i's visual keys,
    # computed with the model's own mask (causal for OpenVLA, bidirectional for OFT). For rows "prefill"
    # and "last" only the row mean is used, so the engine may pass it pre-averaged as [1, n_i];
    # for "text" the rows must be separate, in sequence order (R = T).
    attention: list[torch.Tensor] | None = None
    visual_embeddings: list[torch.Tensor] | None = None  # [n_i, d]
    text_embeddings: torch.Tensor | None = None  # [T, d], same rows as "text" attention
    hidden_states: list[torch.Tensor] | None = None  # [n_i, d]
    frames: list[Any] | None = None  # per image: the query's preprocessed image, uint8 [H, W, 3]


@dataclass
class MergedTokens:
    """Tokens a pruner creates (SparseVLM recycling): inserted after the image's kept visual tokens."""

    features: torch.Tensor  # [r, d] hidden states fed to layer stage.layer+1
    origin: torch.Tensor  # [r] long: original visual index whose position id (RoPE) each token takes


@dataclass
class Selection:
    """One stage's choice, and its per-query record."""

    kept: list[torch.Tensor]  # per image: sorted long indices into the stage's rows, on the inputs' device
    num_rows: list[int]  # per image: rows the stage saw (n_i)
    stage: int = 0
    warmup: bool = False  # a dense warm-up query (the pruner's `dense_warmup`, VLA-Cache's first query)
    merged: list[MergedTokens] | None = None
    select_ms: float = 0.0  # wall time of select(), set by Pruner.select

    @property
    def is_dense(self) -> bool:
        """Nothing dropped or added: the engine may skip the gather."""
        return (all(len(k) == n for k, n in zip(self.kept, self.num_rows))
                and all(len(m.origin) == 0 for m in self.merged or ()))

    def to_record(self) -> dict[str, Any]:
        record = {
            "stage": self.stage,
            "kept": [len(k) for k in self.kept],
            "kept_mask": [indices_to_hex(k, n) for k, n in zip(self.kept, self.num_rows)],
            "warmup": self.warmup,
            "select_ms": round(self.select_ms, 4),
        }
        if self.merged is not None:
            record["merged"] = [len(m.origin) for m in self.merged]
        return record


def indices_to_hex(indices: torch.Tensor, n: int) -> str:
    """Bitmask of kept rows as hex (bit j = row j), zero-padded to n bits: 64 characters for 256 tokens."""
    width = (n + 3) // 4
    bits = np.zeros(width * 4, dtype=np.int64)
    bits[indices.cpu().numpy()] = 1
    nibbles = bits.reshape(width, 4) @ np.array([1, 2, 4, 8])
    return "".join(HEX_DIGITS[nibbles[::-1]])


def hex_to_indices(mask: str) -> list[int]:
    """Inverse of indices_to_hex: sorted kept row indices."""
    nibbles = np.array([int(c, 16) for c in reversed(mask)], dtype=np.int64)
    return np.flatnonzero((nibbles[:, None] >> np.arange(4)) & 1).tolist()


HEX_DIGITS = np.array(list("0123456789abcdef"))


# ---------------------------------------------------------------------------------------------- configs


def check_choice(option: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


DEFAULT_PRUNE_LAYER = 3  # K, the shared cut: every pruner's default, and every model family's unless its record says


def check_prune_layer(prune_layer: int, num_layers: int, lowest: int = 1, why: str = "",
                      option: str = "prune_layer=") -> None:
    """The one range check of a cut K: it must leave a scoring layer (K-1 >= 0; `lowest`=0 for a cut before the
    model) and at least one layer after pruning (K < L). `why` explains a non-default range; `option` is how the
    caller's user spells the setting."""
    if not lowest <= prune_layer < num_layers:
        raise ValueError(f"{option}{prune_layer} must be in {lowest}..{num_layers - 1} "
                         f"for a model with {num_layers} layers{why}")


def matches_type(value: Any, hint: Any) -> bool:
    """Whether an option value fits its annotation: int (not bool), float (int or float, not bool), bool, str,
    `tuple[T, ...]` and unions of these. Config values come from the command line, so they are checked."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, tuple) and all(matches_type(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {type_name(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, hint.__name__)


@dataclass(frozen=True)
class PrunerConfig:
    """Base of the typed per-pruner options: every field must fit its annotation (`prune_layer=2.5` is refused
    here, not at the first query); subclasses check ranges and choices in __post_init__ after super()'s.
    `RETIRED` names options a pruner no longer has, with what replaced them (said when one is given)."""

    RETIRED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        # the pruner's own options first: a shared option may follow one of them (VLA-Pruner's dense_warmup = window)
        for f in sorted(dataclasses.fields(self), key=lambda f: f.name in SHARED_OPTIONS):
            value = getattr(self, f.name)
            if not matches_type(value, hints[f.name]):
                raise ValueError(f"{f.name}={value!r} must be {type_name(hints[f.name])}")


SHARED_OPTIONS = ("dense_warmup",)  # DroppingConfig's


@dataclass(frozen=True)
class DroppingConfig(PrunerConfig):
    """Options of every pruner that drops tokens. `dense_warmup=N`: the first N queries of each episode run
    unpruned (recorded `warmup: true`), so two methods can be compared with the same dense start; 0 for every
    method but VLA-Pruner, whose action history fills on dense queries in the paper."""

    dense_warmup: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.dense_warmup < 0:
            raise ValueError(f"dense_warmup={self.dense_warmup} must be 0 or more (queries per episode run dense)")


# --------------------------------------------------------------------------------------------- pruners


class Pruner:
    """Base class: budgets, plan, timing. Subclasses define `Config`, `make_plan()` and `choose()`."""

    name: ClassVar[str]
    Config: ClassVar[type[PrunerConfig]] = PrunerConfig

    def __init__(self, config: PrunerConfig, keep: float, layout: ModelLayout):
        self.config = config
        self.keep = keep
        self.layout = layout
        self.check_layout()
        self.budgets = tuple(budget(keep, m) for m in layout.image_tokens)
        prunes = any(b < m for b, m in zip(self.budgets, layout.image_tokens))
        self.plan = self.make_plan() if prunes else PrunePlan()
        self.reset()

    def check_layout(self) -> None:
        """Refuse options that do not fit the model (before budgets and plan are made)."""

    def make_plan(self) -> PrunePlan:
        """The plan when the budget drops tokens (keep=1.0 always gets the dense plan)."""
        raise NotImplementedError

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        """Start an episode: (re)sets per-episode state, also once at construction. `seed` = the run's seed,
        `episode` = an id unique within the run, e.g. "libero_spatial/3/17" (suite/task/init state); only
        seeded pruners use them. Subclasses with state of their own call super().reset first."""
        self.query = -1  # the episode's current query (stage 0 of select() starts the next)
        self.last_kept: list[torch.Tensor] | None = None  # the current query's last selection

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
                  "frames": stage.frames}
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


# --------------------------------------------------------------------------------------------- registry

# this package's own pruners, imported on first use; other packages declare theirs as entry points
BUILT_IN = {"none": "vla_pruner.pruning:NonePruner", "vla": "vla_pruner.method:VLAPruner"}
ENTRY_POINT_GROUP = "vla_pruner.pruners"


class PrunerRegistry(Mapping[str, type[Pruner]]):
    """Pruner classes by name. Filled without import side effects: the built-in table and the packages'
    entry points (group `vla_pruner.pruners`, read once, when a name is not found otherwise) name each class as
    "module:Class", imported when first asked for; `register_pruner` adds a class defined anywhere else."""

    def __init__(self, declared: Mapping[str, str], group: str):
        self._declared = dict(declared)
        self._group = group
        self._entry_points_read = False
        self._classes: dict[str, type[Pruner]] = {}

    def _read_entry_points(self) -> None:
        if not self._entry_points_read:
            self._declared = with_entry_points(self._declared, self._group)
            self._entry_points_read = True

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(set(self._declared) | set(self._classes))

    def register(self, cls: type[Pruner]) -> type[Pruner]:
        if cls.name in self.names():
            raise ValueError(f"pruner {cls.name!r} registered twice")
        self._classes[cls.name] = cls
        return cls

    def __getitem__(self, name: str) -> type[Pruner]:
        if name not in self._classes:
            if name not in self._declared:
                self._read_entry_points()
            if name not in self._declared:
                raise KeyError(name)
            self._classes[name] = load_declared("pruner", name, self._declared[name])
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()


PRUNERS = PrunerRegistry(BUILT_IN, ENTRY_POINT_GROUP)


def register_pruner(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: make a pruner defined outside the declared ones (say, in a test) buildable by its `name`."""
    return PRUNERS.register(cls)


def pruner_class(name: str) -> type[Pruner]:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; valid choices: {', '.join(PRUNERS)}")
    return PRUNERS[name]


def pruner_config(cfg: Mapping[str, Any] | PrunerConfig, name: str | None = None) -> PrunerConfig:
    """Typed, validated options from a plain mapping (e.g. Hydra's `pruner` group) `{name: ..., **options}`."""
    if isinstance(cfg, PrunerConfig):
        return cfg
    options = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in cfg.items()}
    name = options.pop("name", name)
    cls = pruner_class(name)
    valid = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options) - valid)
    retired = [f" ({cls.Config.RETIRED[k]})" for k in unknown if k in cls.Config.RETIRED]
    if unknown:
        raise ValueError(f"pruner {name!r} has no option(s) {', '.join(unknown)}{''.join(retired)}; "
                         f"its options: {', '.join(sorted(valid)) or 'none'}")
    return cls.Config(**options)


def build_pruner(cfg: Mapping[str, Any] | PrunerConfig, keep: float, layout: ModelLayout) -> Pruner:
    """Build a registered pruner from `{name: ..., **options}` (or a typed config) and the run's shared
    budget `keep`."""
    if isinstance(cfg, PrunerConfig):
        cls = next((c for c in PRUNERS.values() if type(cfg) is c.Config), None)
        if cls is None:
            raise ValueError(f"no registered pruner takes a {type(cfg).__name__}")
    else:
        cls = pruner_class(cfg.get("name"))
    return cls(pruner_config(cfg, cls.name), keep, layout)


# ------------------------------------------------------------------------------------------------- none


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
