"""The data types between the engine and a pruner: what the pruner may know of the model (`ModelLayout`), what it
asks the engine to compute (`PrunePlan` of `Stage`s, `KVReuse`), what the engine hands it (`StageInputs`, `QueryKV`) and
what it answers (`Selection`, with its per-query record)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

Rows = Literal["prefill", "last", "text"]


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
    # pre-softmax, RoPE-free q.k / sqrt(head_dim) of layer `layer`+1 (its input_layernorm, q_proj, k_proj on its
    # input rows), head-averaged, from the "context" rows (every input token that is neither visual, nor OFT's
    # proprio, nor an action placeholder: BOS, the prompt up to 29871 and OFT's closing </s>) to the visual rows
    # (VLA-ADP's score, read before the layer runs; a stage at layer -1 scores layer 0 on the input embeddings)
    qk_scores: bool = False


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
    action_logits: bool = False  # keep the query's action logits in `QueryKV.logits` (Gated VLA-Cache's gate)


@dataclass
class QueryKV:
    """What one query leaves a KV-reusing pruner for the next query of its episode."""

    keys: list[torch.Tensor]  # per layer [kv_heads, S, head_dim]: every prompt position's key (reused: carried)
    values: list[torch.Tensor]
    entropy: torch.Tensor  # [L] per layer: mean over the rows it ran of their head-averaged attention's entropy
    text_attention: list[torch.Tensor]  # per image [M_i]: attention_layer's head-averaged attention from the
    # text rows to the image's visual tokens, mean over the text rows
    # `KVReuse.action_logits`: [R, V] the LM-head logits (final norm, full vocabulary) of the prefill's rows from the
    # one that emits the first action to the end (OpenVLA: the last row; OFT: 29871, the 56 placeholders, </s>:
    # 58 rows, never pruned), then of each decode step (OpenVLA: 6 more, so one row per action token)
    logits: torch.Tensor | None = None
    decode_steps: int = 0  # how many of `logits`' rows are decode steps (0: a readout layout such as OFT's)


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
    qk_scores: list[torch.Tensor] | None = None  # per image [R, n_i] float32: `Stage.qk_scores`, context rows in order


@dataclass(frozen=True)
class QueryContext:
    """What the policy knows of a query beyond the model's inputs, handed to `Pruner.begin_query` before it runs:
    the observation's robot state (the benchmark's vector, e.g. LIBERO's [eef position (3), axis-angle (3),
    gripper (2)], raw, not normalised), and the actions the episode's previous query returned (env convention, [n, 7],
    executed open loop; None on the episode's first query), for pruners whose rule follows the robot (VLA-ADP's
    motion gate, SpecPrune's coarse/precise controller)."""

    robot_state: np.ndarray | None = None
    previous_actions: np.ndarray | None = None


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
    extra: dict[str, Any] | None = None  # method-specific facts of the choice, added to the record (Gated VLA-Cache's)

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
        return {**record, **(self.extra or {})}


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
