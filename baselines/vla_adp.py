"""VLA-ADP (Action-aware Dynamic Pruning; Pei, Chen et al., ICLR 2026, arXiv 2509.22093): the pruner `vla_adp`
(`VLAADP`, OpenVLA-OFT as in its code, and OpenVLA with one image), and its decision rules as pure functions. Section
numbers ("spec §2.1") refer to the 2026 methods notes (docs/methods-2026.md), written from the official code
(TerryPei/VLA-ADP @ 9a86145 `prismatic/extern/hf/modeling_prismatic.py`; the motion gate only exists in the co-author
repository chen7086/VLA-ADP @ d7094b0, `experiments/robot/libero/run_libero_eval_prune_v2.py`).

What ADP does per query (spec §2.1-2.2):
- a motion gate, one per episode, decides whether the query is "pruned" (state 1) or dense (state 0) from how far
  the end effector moved over the previous executed chunks (`MotionGate`);
- on a pruned query the visual tokens are cut BEFORE layer 0 (the LLM sees a shorter sequence, positions
  renumbered 0..n-1), keeping per camera the tokens with the highest layer-0 RoPE-free pre-softmax q.k importance
  (`qk_importance`), with a 40/60 primary/wrist split of round(512 x ratio) tokens (`camera_budgets`).

The harness's single `keep` IS the qk_keep_ratio (the paper's "Ratio" column): keep = 0.5 keeps round(512 x 0.5) =
256 tokens on a pruned query, 102 primary + 154 wrist. Dense queries keep all 512, so an episode's realised keep is
above `keep` (report both). keep >= 1 never prunes. A 0.5/0.5 split is the variant for equal per-image budgets.

The score's query rows, as in the official code, are the LLM input embeddings of BOS, the prompt (with `29871`) and
`</s>` (every non-action input token), not the proprio token; the harness's "text" rows hold neither BOS nor `</s>`,
so the engine hands them as `Stage.qk_scores`' "context" rows (spec §2.6 (b), (e)(6)).

As a pruner: one stage before layer 0 (`Stage(layer=-1, qk_scores=True)`, positions renumbered as the official code
does), and the gate read from each query's robot state (`Pruner.begin_query`; LIBERO's state vector starts with the
end-effector position). A dense query answers with a dense selection, so the engine runs (and records, and
charges) the whole sequence. pi0 has no such probe and no official ADP: its adapter refuses the name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from vla_pruner.pruning import (DroppingConfig, Pruner, PrunePlan, QueryContext, Selection, Stage, StageInputs,
                                check_choice, top_k)

# token selection (spec §2.1; the README config)
QK_LAYER = 0  # the layer whose input_layernorm / q_proj / k_proj score the tokens (the only value runs use)
KEEP_SPLIT = (0.4, 0.6)  # qk_keep_split: primary camera 40 %, wrist camera 60 % of the kept tokens
README_KEEP_RATIO = 0.75  # qk_keep_ratio of the README config; the paper's table runs 0.3 .. 0.7

# motion gate (spec §2.2; A' PruneV2GenerateConfig with the README / prune_v2_config.json overrides)
DECISION_METHODS = ("adjacent", "avg")
DECISION_METHOD = "adjacent"  # the dataclass default is "avg"; the README config says "adjacent"
EXTREMA_WINDOW = 3  # adjacent_extrema_window
MIN_EXTREMA_WINDOW = 3  # Lw = max(3, adjacent_extrema_window)
INITIAL_STATE = 0  # state of the first Lw queries: 0 = dense (the scripts' label "always coarse" notwithstanding)
LAST_STATE = False  # adjacent_last_state: between the extrema keep the current state (True) or prune (False)
DELTA_METHODS = ("net", "sum")  # A' treats "arc_sum" and "hypot" as "sum"
DELTA_METHOD = "net"
MIN_DELTA_POS = 0.0  # "sum": per-step displacements below this count as 0
MAX_CONSECUTIVE_PRUNED = 3  # limit_max_consecutive_pruned (limit_consecutive_pruned_enabled: True)
AVG_WEIGHT = 0.5  # "avg": a <- 0.5 a + 0.5 d
PRUNED, DENSE = 1, 0
EEF_POSITION = slice(0, 3)  # where the robot state vector holds the end-effector position (world frame, metres)


@dataclass(frozen=True)
class VLAADPConfig(DroppingConfig):
    """ADP's options, the official defaults (README config). `keep` is qk_keep_ratio; `split` None (or a single
    image) ranks all visual tokens jointly; `gate` False prunes every query (the trade-off script's "static" rows);
    `max_consecutive_pruned` None lifts the streak limit."""

    split: tuple[float, ...] | None = KEEP_SPLIT
    gate: bool = True
    decision: str = DECISION_METHOD
    extrema_window: int = EXTREMA_WINDOW
    initial_state: int = INITIAL_STATE
    last_state: bool = LAST_STATE
    delta: str = DELTA_METHOD
    min_delta_pos: float = MIN_DELTA_POS
    max_consecutive_pruned: int | None = MAX_CONSECUTIVE_PRUNED

    def __post_init__(self):
        super().__post_init__()
        check_choice("decision", self.decision, DECISION_METHODS)
        check_choice("delta", self.delta, DELTA_METHODS)
        check_choice("initial_state", self.initial_state, (DENSE, PRUNED))
        if self.split is not None and (not self.split or min(self.split) <= 0):
            raise ValueError(f"split={self.split} must be positive weights, one per image (or null: no split)")
        if self.extrema_window < 1 or (self.max_consecutive_pruned is not None and self.max_consecutive_pruned < 0):
            raise ValueError(f"extrema_window={self.extrema_window} must be >= 1 and max_consecutive_pruned="
                             f"{self.max_consecutive_pruned} >= 0")


# ------------------------------------------------------------------------------------------- importance


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's input_layernorm: x / sqrt(mean(x^2) + eps), times the weight."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def qk_importance(query_embeddings: torch.Tensor, visual_embeddings: torch.Tensor, norm_weight: torch.Tensor,
                  norm_eps: float, q_weight: torch.Tensor, k_weight: torch.Tensor, heads: int, head_dim: int,
                  q_bias: torch.Tensor | None = None, k_bias: torch.Tensor | None = None) -> torch.Tensor:
    """[N] importance of each visual token (spec §2.1 "Score", qk_layer 0): both row sets through the layer's
    input_layernorm, then q_proj (query rows [T, d]) and k_proj (visual rows [N, d]); no RoPE, no mask, no softmax;
    split into heads; q.k / sqrt(head_dim), averaged over heads and query rows. Being linear in q, that average is
    (mean query vector) . k / (heads sqrt(head_dim)) over all heads' dimensions at once. Float32 at least (the
    official code runs in the model's dtype)."""
    width = heads * head_dim
    if q_weight.shape[0] != width or k_weight.shape[0] != width:
        raise ValueError(f"qk_importance: q_proj {tuple(q_weight.shape)} and k_proj {tuple(k_weight.shape)} must "
                         f"have heads x head_dim = {width} rows (the official score splits both into {heads} heads)")
    dtype = torch.promote_types(query_embeddings.dtype, torch.float32)

    def project(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        normed = rms_norm(rows.to(dtype), norm_weight.to(dtype), norm_eps)
        return torch.nn.functional.linear(normed, weight.to(dtype), None if bias is None else bias.to(dtype))

    q = project(query_embeddings, q_weight, q_bias)
    k = project(visual_embeddings, k_weight, k_bias)
    return k @ q.mean(0) / (heads * math.sqrt(head_dim))


# ----------------------------------------------------------------------------------------------- budget


def keep_total(ratio: float, tokens: int) -> int:
    """Visual tokens a pruned query keeps: max(1, round(tokens x ratio)), Python's round (half to even)."""
    return max(1, round(tokens * ratio))


def split_counts(total: int, weights: Sequence[float]) -> list[int]:
    """The official per-camera split of `total` (spec §2.1 "Budget"): weights normalised, max(1, round(total w_i))
    each, then the rounding remainder added (or removed, never below 1) one token at a time, cycling through the
    cameras from the largest weight (ties: the earlier camera)."""
    if total < len(weights):
        raise ValueError(f"split_counts: {total} tokens cannot give each of {len(weights)} cameras one")
    norm = [w / sum(weights) for w in weights]
    counts = [max(1, round(total * w)) for w in norm]
    order = sorted(range(len(norm)), key=lambda i: -norm[i])
    diff, turn = total - sum(counts), 0
    while diff != 0:
        i = order[turn % len(order)]
        step = 1 if diff > 0 else -1 if counts[i] > 1 else 0
        counts[i] += step
        diff -= step
        turn += 1
    return counts


def camera_budgets(ratio: float, weights: Sequence[float], image_tokens: Sequence[int]) -> tuple[int, ...]:
    """Tokens each camera keeps on a pruned query: the split of keep_total over all images, each clipped at the
    camera's own token count (above ratio ~0.83 the wrist share exceeds 256, so the total falls short)."""
    if len(weights) != len(image_tokens):
        raise ValueError(f"split {list(weights)} needs one weight per image ({len(image_tokens)} images)")
    counts = split_counts(keep_total(ratio, sum(image_tokens)), weights)
    return tuple(min(c, m) for c, m in zip(counts, image_tokens))


def adp_select(importance: torch.Tensor, ratio: float, split: Sequence[float] | None,
               image_tokens: Sequence[int]) -> list[torch.Tensor]:
    """Per image, the sorted indices (within the image) a pruned query keeps: the camera's top-count importance
    (ties: lower index; the official torch.topk leaves them unspecified). With no split or one image: the global
    top keep_total, then told apart by image (the official code then feeds them in importance order, not sequence
    order, which under renumbered positions reorders the image: not reproduced). ratio >= 1 keeps everything."""
    bounds = np.cumsum([0, *image_tokens]).tolist()
    if ratio >= 1:
        return [torch.arange(m) for m in image_tokens]
    if split is None or len(image_tokens) == 1:
        kept = top_k(importance, keep_total(ratio, bounds[-1]))
        return [torch.sort(kept[(kept >= a) & (kept < b)] - a).values for a, b in zip(bounds, bounds[1:])]
    budgets = camera_budgets(ratio, split, image_tokens)
    return [torch.sort(top_k(importance[a:b], k)).values for a, b, k in zip(bounds, bounds[1:], budgets)]


# ------------------------------------------------------------------------------------------- motion gate


def window_delta(positions: Sequence[np.ndarray], method: str, min_step: float = 0.0) -> float:
    """How far the end effector moved over one window (the query's position and one per executed step):
    "net" = ||last - first||; "sum" = the per-step distances, those below `min_step` counted as 0."""
    p = np.asarray(positions, dtype=np.float64)
    if len(p) <= 1:
        return 0.0
    if method == "net":
        return float(np.linalg.norm(p[-1] - p[0]))
    steps = np.linalg.norm(np.diff(p, axis=0), axis=1)
    return float(np.where(steps < min_step, 0.0, steps).sum())


def adjacent_state(history: Sequence[float], window: int, initial_state: int, current: int,
                   last_state: bool) -> int:
    """The "adjacent" decision after the newest delta (the last of `history`): with fewer than Lw = max(3, window)
    deltas, `initial_state`; else against the Lw-1 deltas before it: >= their max -> pruned, < their min -> dense,
    otherwise the current state (`last_state`) or pruned."""
    lw = max(MIN_EXTREMA_WINDOW, window)
    if len(history) < lw:
        return initial_state
    d, before = history[-1], history[-lw:-1]
    if d >= max(before):
        return PRUNED
    if d < min(before):
        return DENSE
    return current if last_state else PRUNED


class MotionGate:
    """One episode's motion gate (spec §2.2): `query(eef_pos)` at every policy query returns whether that query is
    pruned. A window opens at a query with its end-effector position (world frame, metres) and closes at the next
    query, whose position is the last step's; `step(eef_pos)` after each executed env step adds the per-step
    positions, which only the "sum" delta reads (with "net" the query positions alone decide). A repeated closing
    position adds a zero-length step, which counts 0 in either delta."""

    def __init__(self, config: VLAADPConfig = VLAADPConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.state = c.initial_state
        limited = c.max_consecutive_pruned is not None
        self.streak = 1 if (c.initial_state == PRUNED and limited) else 0  # consecutive pruned queries so far
        self.window: list[np.ndarray] = []
        self.deltas: list[float] = []
        self.average: float | None = None

    def query(self, eef_pos: Sequence[float]) -> bool:
        """The state of the query starting now (closing the previous window first): True = pruned."""
        if self.window:
            self.step(eef_pos)
            self._decide(window_delta(self.window, self.config.delta, self.config.min_delta_pos))
        self.window = [np.asarray(eef_pos, dtype=np.float64)]
        return not self.config.gate or self.state == PRUNED

    def step(self, eef_pos: Sequence[float]) -> None:
        if not self.window:
            raise RuntimeError("MotionGate.step before the episode's first query")
        self.window.append(np.asarray(eef_pos, dtype=np.float64))

    def _decide(self, d: float) -> None:
        c = self.config
        if c.decision == "avg":
            self.average = d if self.average is None else AVG_WEIGHT * self.average + (1 - AVG_WEIGHT) * d
            state = PRUNED if d >= self.average else DENSE
        else:
            self.deltas.append(d)
            state = adjacent_state(self.deltas, c.extrema_window, c.initial_state, self.state, c.last_state)
        self.state, self.streak = limit_streak(state, self.streak, c.max_consecutive_pruned)


def limit_streak(state: int, streak: int, limit: int | None) -> tuple[int, int]:
    """At most `limit` consecutive pruned queries: the next one is forced dense and the streak restarts.
    Returns (state, streak after it)."""
    if limit is None:
        return state, streak
    if state != PRUNED:
        return state, 0
    if streak >= limit:
        return DENSE, 0
    return state, streak + 1


# ------------------------------------------------------------------------------------------------ pruner


class VLAADP(Pruner):
    """`vla_adp`: on the queries the motion gate prunes, each image keeps its share of round(M x keep) tokens with
    the highest layer-0 q.k importance, cut before layer 0; the other queries run dense."""

    name = "vla_adp"
    Config = VLAADPConfig
    config: VLAADPConfig

    def check_layout(self) -> None:
        images = self.layout.image_tokens
        split = self.config.split
        if split is not None and len(images) > 1 and len(split) != len(images):
            raise ValueError(f"split={list(split)} needs one weight per image ({len(images)} images), or null")

    @property
    def joint(self) -> bool:
        """Whether the tokens are ranked over all images at once (no split, or one image)."""
        return self.config.split is None or len(self.layout.image_tokens) == 1

    def image_budgets(self) -> tuple[int, ...]:
        """Per image on a pruned query: the split of round(keep x all visual tokens) (joint ranking: its share in
        proportion to the image's tokens, as the analytic cost reads it; the real split follows the scores)."""
        images = self.layout.image_tokens
        if self.keep >= 1:
            return images
        if self.joint:
            total = keep_total(self.keep, sum(images))
            return tuple(split_counts(total, images)) if total >= len(images) else (total,) + (0,) * (len(images) - 1)
        return camera_budgets(self.keep, self.config.split, images)

    def make_plan(self) -> PrunePlan:
        return PrunePlan(stages=(Stage(layer=-1, qk_scores=True),), renumber_positions=True)

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.gate = MotionGate(self.config)
        self.pruned: bool | None = None  # the gate's word on the current query (None: no robot state given)

    def begin_query(self, context: QueryContext) -> None:
        """The gate decides every query, dense warm-up ones too (its windows span every executed chunk)."""
        super().begin_query(context)
        state = context.robot_state
        self.pruned = None if state is None else self.gate.query(np.asarray(state, dtype=np.float64)[EEF_POSITION])

    def choose(self, inputs: StageInputs) -> Selection:
        if self.pruned is None:
            raise ValueError(f"{self.name} needs each query's robot state: call begin_query(QueryContext("
                             f"robot_state=...)) before the query (VLAPolicy does)")
        pruned, self.pruned = self.pruned, None
        if not pruned:
            return self.dense(inputs)
        importance = torch.cat([scores.mean(0) for scores in inputs.qk_scores])
        kept = adp_select(importance, self.keep, None if self.joint else self.config.split, self.layout.image_tokens)
        return Selection(kept=[k.to(importance.device) for k in kept], num_rows=self.rows_per_image(inputs))
