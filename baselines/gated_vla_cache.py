"""Gated VLA-Cache (Wu, Kawaharazuka, Okada, arXiv 2608.10824, "Neural Introspection Gating"): VLA-Cache, plus a
one-shot gate that runs the next query with nothing reused when the current query's action logits were not
confident (`pruner=gated_vla_cache`). The gate's rules are pure functions here, checked against a transcription of
the released code; `GatedVLACache` runs them on the engine's KV-reuse path, which hands it each query's action logits
(`KVReuse.action_logits`). Section numbers ("spec §1.1") refer to the 2026 methods notes (docs/methods-2026.md), written
from the official code (zjw4321/gated-vla-cache: `main` e3a7e24 and the paper's tag `iros2026`
ef5ed42).

The rules (spec §1.1):
- margin of a query = mean over its action rows of p[1st] - p[2nd], p = softmax over the FULL vocabulary (the
  padding rows included) of the row's LM-head logits. OpenVLA: the 7 decode steps' logits. OpenVLA-OFT: 56 rows of
  the single prefill pass's LM-head logits (OFT decodes with its L1 head, so these logits are a by-product the engine
  has to compute on those rows only): `offset: end` (the `main` fix, the default) reads original rows [S-58, S-2),
  the `29871` row and the first 55 placeholders; `offset: paper` reads rows [NP+P, NP+P+56) counted from the start
  of the sequence the VLA-Cache fork returns, which is shortened by the r reused rows (`oft_margin_rows`): in
  original rows [S-58+r, min(S-2+r, S)), empty (margin None) once r >= 58.
- gate: the next query runs in full iff margin < threshold; the flag lives for exactly one query and is recomputed
  after every query, a gated one included. A None margin (empty rows) or a None threshold never gates (the released
  code stores the flag in the query's fresh cache dict only when both exist, and reads a missing flag as False).
- the episode's first query is dense anyway (VLA-Cache has nothing to reuse), but its margin is recorded, so the
  gate can first fire on query 1.
- everything else is VLA-Cache (`baselines.vla_cache`), with the per-model defaults of `MODEL_DEFAULTS`: OpenVLA's
  released run uses 120 static candidates where VLA-Cache's uses 130.

Threshold 0 is plain VLA-Cache (a margin is never negative); a threshold above 1 makes every query after the first
dense. The threshold is a per-model constant, not a function of the run's `keep` (which keeps VLA-Cache's meaning).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.vla_cache import VLACache, VLACacheConfig
from vla_pruner.pruning import QueryKV, Selection, StageInputs, check_choice

OPENVLA_ACTION_ROWS = 7  # OpenVLA: one logit row per generated action token
OFT_ACTION_ROWS = 56  # OpenVLA-OFT: ACTION_DIM 7 x NUM_ACTIONS_CHUNK 8
OFT_ROWS_AFTER_PROMPT = 58  # the 56 placeholders, </s>, counted back from the end to the first action row's start
OFT_ROWS_BEFORE_END = 2  # `offset: end` stops 2 rows before the end (the last placeholder and </s> are not read)
OFFSETS = ("end", "paper")  # end: rows [S-58, S-2) (main, e3a7e24); paper: the start-indexed slice (iros2026)


@dataclass(frozen=True)
class ModelDefaults:
    """The released settings of one model family (spec §1.1 "Per-model defaults": G's README table and run.sh)."""

    margin_threshold: float  # --action_margin_threshold
    candidates: int  # static candidates per image (VLA-Cache's own OpenVLA code: 130)
    eviction_top_k: int  # most text-attended tokens per image never reused (as VLA-Cache)


MODEL_DEFAULTS = {
    "openvla": ModelDefaults(margin_threshold=0.65, candidates=120, eviction_top_k=120),
    "openvla_oft": ModelDefaults(margin_threshold=0.50, candidates=150, eviction_top_k=100),
}


@dataclass(frozen=True)
class GatedVLACacheConfig(VLACacheConfig):
    """VLA-Cache's options plus the gate's. `margin_threshold` None turns the gate off (plain VLA-Cache); its default
    is OpenVLA's (0.65), OFT's (0.50) is `MODEL_DEFAULTS["openvla_oft"]`, to be set per model as VLA-Cache's
    eviction is. `offset` only matters for OpenVLA-OFT."""

    margin_threshold: float | None = MODEL_DEFAULTS["openvla"].margin_threshold
    offset: str = "end"  # end | paper (OFT rows of the margin, see oft_margin_rows)

    def __post_init__(self):
        super().__post_init__()
        check_choice("offset", self.offset, OFFSETS)
        if self.margin_threshold is not None and self.margin_threshold < 0:
            raise ValueError(f"margin_threshold={self.margin_threshold} must be >= 0 (0 never gates) or null (off)")


def action_margin(logits: torch.Tensor) -> float | None:
    """Mean over rows of the top-1 minus top-2 probability, softmax over every column of `logits` [rows, vocab] in
    float32 (spec §1.1 "Margin"). None when there are no rows: the paper offset's empty slice, which never gates.
    (The OpenVLA code takes exp of log_softmax: the same numbers to float rounding.)"""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"action_margin: logits must be [rows, vocab >= 2], got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        return None
    top2 = torch.softmax(logits.float(), dim=-1).topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).mean())


def oft_margin_rows(seq_len: int, reused: int = 0, offset: str = "end") -> range:
    """Which rows (in the unshortened sequence's numbering, 0..S-1) of an OpenVLA-OFT prefill feed the margin
    (spec §1.1 "The two OFT offsets"). `reused` = r, the visual rows reused at the last reuse layer, which the
    VLA-Cache fork drops from what it returns.
    end: rows [S-58, S-2) on every query, whatever r.
    paper: the slice [NP+P, NP+P+56) = [S-58, S-2) of the SHORTENED sequence (length S-r), clipped to its end; the
    dropped rows are all visual (before S-58), so shortened row j is original row j + r."""
    check_choice("offset", offset, OFFSETS)
    start = seq_len - OFT_ROWS_AFTER_PROMPT
    if start < 0 or not 0 <= reused <= start:
        raise ValueError(f"oft_margin_rows: {reused} reused rows do not fit a sequence of {seq_len} rows")
    stop = seq_len - OFT_ROWS_BEFORE_END
    if offset == "end":
        return range(start, stop)
    shortened_stop = min(stop, seq_len - reused)
    return range(start + reused, max(start, shortened_stop) + reused)


def low_margin(margin: float | None, threshold: float | None) -> bool:
    """Whether the NEXT query runs in full: margin < threshold; never when either is None (spec §1.1 "Gate")."""
    return margin is not None and threshold is not None and margin < threshold


class MarginGate:
    """One episode's gate: `run_dense()` at the start of a query says whether it skips the cache path (nothing
    reused, a fresh store); `observe(margin)` after EVERY query (gated or not) sets the flag for the next one only."""

    def __init__(self, threshold: float | None):
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """A new episode: its first query is never gated (it is dense by VLA-Cache's own rule)."""
        self.flag = False

    def run_dense(self) -> bool:
        return self.flag

    def observe(self, margin: float | None) -> bool:
        """Record this query's margin; returns the flag it leaves for the next query."""
        self.flag = low_margin(margin, self.threshold)
        return self.flag


class GatedVLACache(VLACache):
    """VLA-Cache whose next query runs in full (nothing reused, a fresh store) when this query's action margin is
    below `margin_threshold`. Each query's first selection records whether it was gated and the margin that decided
    it (`gated`, `previous_margin`); a gated query is charged as the dense query it is (nothing reused)."""

    name = "gated_vla_cache"
    Config = GatedVLACacheConfig
    keeps_action_logits = True

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.gate = MarginGate(self.config.margin_threshold)
        self.margin: float | None = None  # the last query's action margin

    def stored_query(self) -> QueryKV | None:
        """Nothing to reuse on a gated query, so the engine runs it in full (and, under `behaviour: released`,
        decodes it at the normal positions, as the released code's fresh cache does)."""
        return None if self.gate.run_dense() else self.stored

    def choose(self, inputs: StageInputs) -> Selection:
        selection = super().choose(inputs)
        if inputs.stage == 0:
            selection.extra = {"gated": self.gate.run_dense(), "previous_margin": self.margin}
        return selection

    def keep_query(self, query: QueryKV) -> None:
        super().keep_query(query)
        self.margin = self.query_margin(query)
        self.gate.observe(self.margin)

    def query_margin(self, query: QueryKV) -> float | None:
        """This query's margin: OpenVLA's decode steps (one row per action token), or the OFT rows `offset` names,
        found in the 58 logits rows the engine kept (the 29871 row to </s>)."""
        if query.logits is None:
            raise RuntimeError("gated_vla_cache: the engine kept no action logits for this query")
        if query.decode_steps:
            return action_margin(query.logits[-(1 + query.decode_steps):])
        seq_len = query.keys[0].shape[1]
        first = seq_len - len(query.logits)  # the original row of the first logits row
        rows = oft_margin_rows(seq_len, self.reused_rows(), self.config.offset)
        return action_margin(query.logits[rows.start - first:rows.stop - first])

    def reused_rows(self) -> int:
        """r: the visual rows this query reused at its last reuse layer (0 on a dense or gated query)."""
        return self.counts[-1] if self.counts else 0  # reused_counts caps each count at the reusable tokens
