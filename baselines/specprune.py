"""SpecPrune-VLA (Wang, Xu et al., arXiv 2509.05614, ICML 2026): the pruner `specprune` (`SpecPrune`), and its
decision rules as pure functions, independent of the engine. Section numbers ("spec §3.1")
refer to the 2026 methods notes (docs/methods-2026.md), written from the official code (alexwhz-sjtu/SpecPrune-VLA @
d3b06ed: `modeling_llama.py` at the root, the rest under `openvla-oft/`).

The released method (static pruning; its dynamic layer pruning and layer skip are off) cuts visual rows twice in
one forward pass, at their original positions (spec §3.1):
- static patches, per camera: 14 px patches of the model's 224 view whose raw-pixel cosine similarity with a
  lagged frame is >= 0.986, the k most similar (`static_patches`); k = 200 coarse / 220 precise;
- cut 1, after layer 0: keep every non-static token and the 3 k_a tokens most attended at layer 0 by prompt
  tokens 9..P-2 (`cut1_keep`); k_a = 16 primary / 12 wrist, precise 25 / 19;
- cut 2, after layer 1: of those, keep the non-static ones, A0's top k_a and the k_a most attended at layer 1 by
  prompt tokens 10..P-1 (A1, `cut2_keep`). The released code names A1 by its rank among the camera's columns plus
  the camera's offset, not by the token the column holds (`behaviour: released`); `intended` maps it back.
- an action-aware controller switches between coarse and precise from the executed actions (`ModeController`).

Where the harness differs (it cannot do what the official runner does):
- the lagged frame: the official one is 1-5 env steps back (`lag_steps` from the summed executed actions,
  `lagged_frame` from a per-step history); the harness hands a pruner only query frames, so it compares with the
  previous query's frame (8 steps back), and with the current frame on the episode's first query (as the official
  code does). `static_patches` takes the two frames, whichever they are.
- the replan: switching to precise mid-chunk makes the official runner drop the rest of the chunk and query at the
  next step; the harness has no mid-chunk query, so `ModeController.step` reports the request and precise mode
  takes effect from the next scheduled query.
- the action adapter: the official runner does not execute its first 9 acting steps; the harness executes every
  step, and the controller counts the steps it is fed (checks from the 11th, `acting_steps > 10`).
- not implemented, as released: the previous query's global attention (`prev_attn_indices` is always empty),
  dynamic pruning (`DYNAMIC_PRUNE_RATIO` is only recorded), layer skip (`SKIP_LAYER = 0`).

Mapping the harness's `keep` (spec §3.5 (c)): the knobs cap dropped tokens, they are not keep ratios. k_coarse =
round((1 - keep) x 256), k_precise = min(256, round(1.1 k_coarse)) (the released 220 / 200), attention counts
unchanged. A camera reaches keep x 256 only when k patches are static and none is re-added; the released 200 / 220
is keep = 56 / 256 ~ 0.22.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from baselines.vla_cache import patch_similarity, static_candidates
from vla_pruner.pruning import (PrunePlan, Pruner, PrunerConfig, QueryContext, Selection, Stage, StageInputs, StageRows,
                                check_choice, top_k)

# `experiments/robot/spec_prune_constants.py`, derived as there
DYNAMIC_PRUNE_RATIO = 0.8  # dynamic layer pruning's keep ratio (dynamic pruning is off in the release)
STATIC_PRUNE_RATIO = 0.8  # despite the name, it only scales the attention counts
ATTN_TOPK = int(20 * STATIC_PRUNE_RATIO)  # 16: k_a, primary camera, coarse
ATTN_TOPK_WRIST = int(15 * STATIC_PRUNE_RATIO)  # 12
PRECISE_SCALE = STATIC_PRUNE_RATIO ** 2 if STATIC_PRUNE_RATIO <= 1.0 else STATIC_PRUNE_RATIO
ATTN_TOPK_PRECISE = int(40 * PRECISE_SCALE)  # 25
ATTN_TOPK_PRECISE_WRIST = int(30 * PRECISE_SCALE)  # 19
PRIMARY_TOPK, PRIMARY_TOPK_PRECISE = 200, 220  # static patches dropped at most, per camera
WRIST_TOPK, WRIST_TOPK_PRECISE = 200, 220
VELOCITY_THRES, ROT_THRES, XY_THRES, Z_THRES = 0.4, 0.2, 0.1, 0.1  # coarse -> precise
SKIP_LAYER = 0  # layer skip: no layer (and layer skip is off)

# the runner's and the model's own literals
SIMILARITY_THRESHOLD = 0.986  # `get_similarity_indices(..., sim_threshold=0.986)` in openvla_utils.py
PATCH_SIZE = 14  # pixels: a 16 x 16 grid on the 224 view
LEAVE_PRECISE_Z, LEAVE_PRECISE_ROT = 0.2, 0.3  # precise -> coarse (run_libero_eval.py)
CHECKED_AFTER_STEPS = 10  # the controller runs from acting step 11 on
MAX_LAG = 6  # prev_T = min(int(22/3 - 16/3 x move_v / 6) + 3, 6)
CUT1_WIDTH = 3  # cut 1 keeps the top 3 k_a of the layer-0 attention
CUT1_ROWS = slice(9, -1)  # of the P prompt rows after proprio: absolute positions [523, 513 + P)
CUT2_ROWS = slice(10, None)  # [S'-57-P+10, S'-57) counted from the end: prompt tokens 10..P-1, `29871` included
PRECISE_FACTOR = 1.1  # k_precise / k_coarse = 220 / 200, for other keeps
BEHAVIOURS = ("released", "intended")  # A1's index mapping at cut 2


@dataclass(frozen=True)
class SpecPruneConfig(PrunerConfig):
    """SpecPrune's options. `static_topk` None derives k from `keep` (`static_counts`); an explicit value is the
    coarse k (precise: min(256, round(1.1 k))), 200 for the release. `action_aware` False stays coarse."""

    threshold: float = SIMILARITY_THRESHOLD
    static_topk: int | None = None
    behaviour: str = "released"  # released | intended (A1 mapped back through the kept positions)
    action_aware: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_choice("behaviour", self.behaviour, BEHAVIOURS)
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold} must be a cosine similarity in [-1, 1]")
        if self.static_topk is not None and not 0 <= self.static_topk <= 256:
            raise ValueError(f"static_topk={self.static_topk} must be in 0..256")


def attention_counts(precise: bool) -> tuple[int, int]:
    """k_a per camera (primary, wrist): 16 / 12 coarse, 25 / 19 precise."""
    return (ATTN_TOPK_PRECISE, ATTN_TOPK_PRECISE_WRIST) if precise else (ATTN_TOPK, ATTN_TOPK_WRIST)


def static_counts(keep: float, tokens: int = 256) -> tuple[int, int]:
    """(k_coarse, k_precise) static patches per camera for the harness's `keep` (spec §3.5 (c)): round((1 - keep)
    x tokens) (Python's round, as VLA-Cache's candidates) and min(tokens, round(1.1 k_coarse))."""
    coarse = round((1.0 - keep) * tokens)
    return coarse, min(tokens, round(PRECISE_FACTOR * coarse))


# ----------------------------------------------------------------------------------------- static patches


def static_patches(frame: np.ndarray, lagged: np.ndarray, k: int,
                   threshold: float = SIMILARITY_THRESHOLD) -> torch.Tensor:
    """Sorted indices (within the camera) of its static patches (spec §3.1 "Static"): raw-pixel cosine similarity
    of each 14 px patch (float32, +1e-8 in the denominator) between two uint8 [224, 224, 3] frames; of those >=
    `threshold`, the k most similar. Ties go to the lower index: the official np.argpartition leaves them
    unspecified, and they are common (a frame compared with itself gives every patch ~1)."""
    similarity = patch_similarity(np.asarray(frame), np.asarray(lagged), frame.shape[0] // PATCH_SIZE)
    return torch.sort(static_candidates(similarity, threshold, k)).values


def lag_steps(summed_action: Sequence[float]) -> int:
    """prev_T (spec §3.1 "Lagged frame"): from the sum H of the actions executed since the previous query,
    move_v = ||H[0:3]||, prev_T = min(int(-16/3 move_v / 6 + 22/3) + 3, 6), int truncating towards 0. 6 up to
    move_v 4.875, then 5, 4, 3, 2 (up to 10.5), 1 (the current frame) and <= 0 (Python indexing from the episode's
    first frames)."""
    move_v = float(np.linalg.norm(np.asarray(summed_action, dtype=np.float64)[:3]))
    return min(int(-16 / 3 * move_v / 6 + 22 / 3) + 3, MAX_LAG)


def lagged_frame(history: Sequence[np.ndarray], lag: int, first_query: bool) -> np.ndarray:
    """The official "previous image" from the per-step frames (oldest first, the current one last): the current
    frame on the episode's first query or when fewer than `lag` frames exist, else history[-lag] (Python indexing,
    so lag 0 is the first frame). The harness cannot give this (see the module docstring)."""
    if first_query or len(history) < lag:
        return history[-1]
    return history[-lag]


# ------------------------------------------------------------------------------------------------- cuts


def prompt_attention(attention: torch.Tensor, rows: slice) -> torch.Tensor:
    """Mean over the chosen prompt rows of head-averaged attention [P, n] (rows: the P prompt tokens after the
    proprio token, `29871` last: the harness's "text" rows) to one camera's n visual keys, float32."""
    if attention.shape[0] < CUT2_ROWS.start + 1:
        raise ValueError(f"SpecPrune reads prompt rows 9.. and 10..; got {attention.shape[0]} prompt rows")
    return attention[rows].float().mean(0)


def cut1_keep(attention: torch.Tensor, static: torch.Tensor, k_attn: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut 1, after layer 0 (spec §3.1): `attention` [P, M] = layer 0's attention from the prompt rows to the
    camera's M visual keys. A0 = the 3 k_a tokens most attended by prompt rows 9..P-2 (most attended first, ties to
    the lower index). Returns (kept: every non-static token and A0, sorted; A0)."""
    a0 = top_k(prompt_attention(attention, CUT1_ROWS), CUT1_WIDTH * k_attn)
    keep = torch.ones(attention.shape[1], dtype=torch.bool)
    keep[static] = False
    keep[a0] = True
    return torch.nonzero(keep).flatten(), a0


def cut2_keep(attention: torch.Tensor, kept: torch.Tensor, static: torch.Tensor, a0: torch.Tensor, k_attn: int,
              behaviour: str = "released") -> torch.Tensor:
    """Cut 2, after layer 1 (spec §3.1): `attention` [P, n] = layer 1's attention from the prompt rows to the
    camera's n visual keys kept at cut 1 (`kept`, sorted original indices). A1 = the k_a columns most attended by
    prompt rows 10..P-1; `released` names them by column rank (the official bug: right only if cut 1 dropped
    nothing of this camera), `intended` by the token in that column. Keep = kept ∩ (non-static ∪ A0's top k_a ∪
    A1). Returns sorted original indices."""
    check_choice("behaviour", behaviour, BEHAVIOURS)
    ranks = top_k(prompt_attention(attention, CUT2_ROWS), k_attn)
    a1 = ranks if behaviour == "released" else kept[ranks]
    wanted = ~torch.isin(kept, static) | torch.isin(kept, a0[:k_attn]) | torch.isin(kept, a1)
    return kept[wanted]


# ------------------------------------------------------------------------------------------- controller


@dataclass(frozen=True)
class QueryMode:
    """What a query uses: precise mode (k 220, k_a 25 / 19) or coarse, and the official lag (prev_T)."""

    precise: bool
    lag: int


def speeds(action: np.ndarray) -> tuple[float, float, float, float]:
    """(v, v_xy, v_z, w) of one executed action: ||a[0:3]||, ||a[0:2]||, a[2] (signed), ||a[3:6]||."""
    a = np.asarray(action, dtype=np.float64)
    return (float(np.linalg.norm(a[0:3])), float(np.linalg.norm(a[0:2])), float(a[2]),
            float(np.linalg.norm(a[3:6])))


def enters_precise(action: np.ndarray) -> bool:
    """Coarse -> precise: slow (v < 0.4), or nearly still in xy, not rising and barely rotating."""
    v, v_xy, v_z, w = speeds(action)
    return v < VELOCITY_THRES or (v_xy < XY_THRES and v_z < Z_THRES and w < ROT_THRES)


def leaves_precise(action: np.ndarray, chunk_done: bool) -> bool:
    """Precise -> coarse: rising (v_z > 0.2), or rotating (w > 0.3) on the chunk's last action."""
    _, _, v_z, w = speeds(action)
    return v_z > LEAVE_PRECISE_Z or (w > LEAVE_PRECISE_ROT and chunk_done)


class ModeController:
    """One episode's coarse/precise controller (spec §3.3), fed every executed action in order. `start_query()` at
    each policy query gives its mode and lag and restarts the action sum; `step(action, remaining)` after each
    executed env step (`remaining` = actions of the chunk still queued) updates the mode and returns whether the
    official runner would replan now (a switch to precise mid-chunk; never at the first check, where the runner's
    `cur_mode` still holds its initial True)."""

    def __init__(self, checked_after: int = CHECKED_AFTER_STEPS):
        self.checked_after = checked_after
        self.reset()

    def reset(self) -> None:
        self.precise = False
        self.last_mode = True  # the runner's `cur_mode`, initially True ("draft mode")
        self.steps = 0
        self.summed: np.ndarray | None = None

    def start_query(self) -> QueryMode:
        lag = lag_steps(np.zeros(3) if self.summed is None else self.summed)
        self.summed = None
        return QueryMode(precise=self.precise, lag=lag)

    def step(self, action: Sequence[float], remaining: int) -> bool:
        a = np.asarray(action, dtype=np.float64)
        self.summed = a.copy() if self.summed is None else self.summed + a
        self.steps += 1
        if self.steps <= self.checked_after:
            return False
        replan = False
        if self.precise:
            self.precise = not leaves_precise(a, remaining == 0)
        else:
            self.precise = enters_precise(a)
            replan = self.precise and not self.last_mode and remaining > 0
        self.last_mode = self.precise
        return replan


# ------------------------------------------------------------------------------------------------ pruner


class SpecPrune(Pruner):
    """`specprune`: two stages, after layer 0 (cut 1) and after layer 1 (cut 2), on the "text" rows' attention,
    at original positions; static patches against the previous query's frame (the first query: its own); the
    controller fed the previous query's actions (`Pruner.begin_query`) chooses coarse or precise per query."""

    name = "specprune"
    Config = SpecPruneConfig
    config: SpecPruneConfig

    def check_layout(self) -> None:
        if len(self.layout.image_tokens) > 2:
            raise ValueError(f"SpecPrune has attention counts for a primary and a wrist camera, not "
                             f"{len(self.layout.image_tokens)} images")

    def static_k(self, precise: bool) -> int:
        c = self.config
        coarse = static_counts(self.keep)[0] if c.static_topk is None else c.static_topk
        return min(256, round(PRECISE_FACTOR * coarse)) if precise else coarse

    def image_budgets(self) -> tuple[int, ...]:
        """Per image, the rows a coarse query leaves at most: its tokens minus k static (none re-added)."""
        return tuple(max(0, m - self.static_k(False)) for m in self.layout.image_tokens)

    def make_plan(self) -> PrunePlan:
        return PrunePlan(stages=(Stage(layer=0, rows="text", frames=True), Stage(layer=1, rows="text")))

    def schedule(self) -> tuple[StageRows, ...]:
        """A coarse query with every re-added token non-static: k_a x 3 after layer 0, k_a x 2 after layer 1."""
        counts = attention_counts(False)
        rows = [[min(m, b + w * k) for m, b, k in zip(self.layout.image_tokens, self.budgets, counts)]
                for w in (CUT1_WIDTH, 2)]
        return StageRows(0, tuple(rows[0])), StageRows(1, tuple(rows[1]))

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.controller = ModeController()
        self.previous_frames: list[np.ndarray] | None = None
        self.mode = QueryMode(precise=False, lag=MAX_LAG)
        self.cut1: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per image (kept, static, A0)

    def begin_query(self, context: QueryContext) -> None:
        """Feeds the controller the previous query's chunk (executed open loop), then takes this query's mode."""
        super().begin_query(context)
        if self.config.action_aware and context.previous_actions is not None:
            actions = np.asarray(context.previous_actions)
            for i, action in enumerate(actions):
                self.controller.step(action, len(actions) - 1 - i)
        self.mode = self.controller.start_query()

    def choose(self, inputs: StageInputs) -> Selection:
        counts = attention_counts(self.mode.precise)
        if inputs.stage == 0:
            frames = [np.asarray(f) for f in inputs.frames]
            lagged = frames if self.previous_frames is None else self.previous_frames
            self.previous_frames = frames
            k = self.static_k(self.mode.precise)
            self.cut1 = []
            for attention, frame, before, k_attn in zip(inputs.attention, frames, lagged, counts):
                static = static_patches(frame, before, k, self.config.threshold)
                kept, a0 = cut1_keep(attention.cpu(), static, k_attn)
                self.cut1.append((kept, static, a0))
            kept = [k for k, _, _ in self.cut1]
        else:
            kept = [torch.searchsorted(before, cut2_keep(attention.cpu(), before, static, a0, k_attn,
                                                         self.config.behaviour))
                    for attention, (before, static, a0), k_attn in zip(inputs.attention, self.cut1, counts)]
        device = self.device(inputs)
        return Selection(kept=[k.to(device) for k in kept], num_rows=self.rows_per_image(inputs))
