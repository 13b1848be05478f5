"""The pruning protocol a model's runner follows, whatever its layer loop (the Llama engine, pi0's prefix).

Per query a runner checks each sample's pruner against what it offers (`Offers`, `check_pruners`), hands each
pruner at each stage what a batch-1 query would show it (`stage_inputs`), keeps each sample's selected rows
(`gather`), sums the action queries' attention into `ActionAttention`, and records a `QueryTrace` per sample.
Only where rows are (which rows are "text", which are padding) and how layers run stay with the runner.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import torch

from vla_pruner.layout import TokenSet
from vla_pruner.pruning import PrunePlan, Pruner, Rows, Selection, Stage, StageInputs


def has_work(plan: PrunePlan) -> bool:
    """Whether a plan prunes or probes (else the query is the dense model's)."""
    return bool(plan.stages or plan.action_layers)


@dataclass(frozen=True)
class Offers:
    """What a runner can do beyond deleting rows, so a plan asking for more is refused in one sentence."""

    runner: str  # named in refusals, e.g. "pi0's pruned prefix"
    kv_reuse: bool = False  # rows a stage leaves out stay keys with the previous query's keys/values (`KVReuse`)
    frames: bool = False  # a stage may ask for the query's preprocessed images
    renumbered_positions: bool = False  # `PrunePlan.renumber_positions`
    qk_scores: bool = False  # a stage may ask for the next layer's pre-softmax q.k scores (`Stage.qk_scores`)

    def refusal(self, plan: PrunePlan) -> str | None:
        """Why this runner cannot run `plan` (None: it can)."""
        if plan.reuse is not None and not self.kv_reuse:
            return (f"{self.runner} has no cross-query key/value reuse (VLA-Cache's plan); "
                    f"prune with a deleting pruner")
        if any(stage.frames for stage in plan.stages) and not self.frames:
            return f"{self.runner} does not hand a stage the query's images"
        if any(stage.qk_scores for stage in plan.stages) and not self.qk_scores:
            return f"{self.runner} does not hand a stage pre-softmax q.k scores (VLA-ADP's layer-0 probe)"
        if plan.renumber_positions and not self.renumbered_positions:
            return (f"{self.runner} keeps the original position ids; renumbered positions are not implemented "
                    f"for it: use positions=original")
        return None


def check_pruners(pruners: Sequence[Pruner], batch: int, offers: Offers) -> list[Pruner]:
    """One pruner per sample, all with one plan the runner offers (the batch runs its stages together), each
    its own object when the plan has work (a pruner's state belongs to one episode)."""
    pruners = list(pruners)
    if len(pruners) != batch:
        raise ValueError(f"got {len(pruners)} pruners for a batch of {batch} sequences: pass one per sample")
    plan = pruners[0].plan
    different = [i for i, p in enumerate(pruners) if p.plan != plan]
    if different:
        raise ValueError(f"the pruners of a batch must share one plan (the stages and action layers): "
                         f"sample {different[0]} has {pruners[different[0]].plan}, sample 0 has {plan}")
    if has_work(plan) and len({id(p) for p in pruners}) != batch:
        raise ValueError("each sample needs its own pruner object: a pruner's state belongs to one episode")
    why = offers.refusal(plan)
    if why:
        raise ValueError(why)
    return pruners


@dataclass
class QueryTrace:
    """What one query's pruning did for one sample, for the episode record."""

    visual_tokens: int  # before pruning, all images
    prefill_tokens: list[int] = field(default_factory=list)  # tokens each layer ran on during prefill
    kept_visual: int = 0  # visual tokens (kept + merged) the last layer ran on
    selections: list[Selection] = field(default_factory=list)
    prefill_keys: list[int] | None = None  # KV reuse: keys each layer attended to (its rows + the reused ones)
    reused_mask: list[str] | None = None  # KV reuse: per image, hex bitmask of the visual tokens the last layer reused

    def to_record(self) -> dict:
        record = {
            "visual_tokens": self.visual_tokens,
            "kept_visual": self.kept_visual,
            "prefill_tokens": self.prefill_tokens,
            "warmup": any(s.warmup for s in self.selections),
            "selection_ms": round(sum(s.select_ms for s in self.selections), 4),
            "pruning": [s.to_record() for s in self.selections],
        }
        if self.prefill_keys is not None:  # reused visual tokens: keys, not queries, of the last layer
            record.update(prefill_keys=self.prefill_keys, reused_visual=self.visual_tokens - self.kept_visual,
                          reused_mask=self.reused_mask)
        return record


def attention_probs(query: torch.Tensor, keys: torch.Tensor, scaling: float,
                    visible: torch.Tensor | None = None) -> torch.Tensor:
    """Head-averaged attention probabilities [B, R, N] of R query rows, from the queries [B, heads, R, head_dim]
    and keys [B, heads, N, head_dim] a layer attends with; visible [R, N] is the mask (None: every key). Scores
    and softmax in float32."""
    scores = (query.float() @ keys.float().transpose(-1, -2)) * scaling
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return scores.softmax(-1).mean(1)


def row_attention(probs: torch.Tensor, rows: Rows) -> torch.Tensor:
    """A stage's head-averaged attention [..., R, keys] as its pruner reads it: "text" rows one by one, the
    other row kinds only as their mean ([..., 1, keys])."""
    return probs if rows == "text" else probs.mean(-2, keepdim=True)


def stage_inputs(index: int, stage: Stage, visual: list[torch.Tensor], attention: torch.Tensor | None,
                 embeds: torch.Tensor, tokens: TokenSet, text: Any, hidden: torch.Tensor | None,
                 frames: Sequence[Any] | None = None, qk_scores: torch.Tensor | None = None) -> StageInputs:
    """What one sample's pruner is handed at a stage. `visual`: per image, its rows among `tokens` (the rows the
    stage layer ran); `attention` [R, keys] of the stage's query rows (`row_attention`); `embeds` [S, d] the
    sample's input embeddings by original position; `text` indexes them for the "text" rows; `hidden` [n, d]
    the stage layer's outputs; `qk_scores` [R, n] the context rows' q.k scores against every row (`Stage.qk_scores`)."""
    one = StageInputs(stage=index)
    if attention is not None:
        one.attention = [attention[:, v] for v in visual]
    if stage.visual_embeddings:
        one.visual_embeddings = [embeds[tokens.position[v]] for v in visual]
    if stage.text_embeddings:
        one.text_embeddings = embeds[text]
    if stage.hidden_states:
        one.hidden_states = [hidden[v] for v in visual]
    if stage.frames:
        one.frames = list(frames)
    if stage.qk_scores:
        one.qk_scores = [qk_scores[:, v] for v in visual]
    return one


def gather(tokens: TokenSet, hidden: torch.Tensor, selection: Selection,
           image_starts: Sequence[int]) -> tuple[torch.Tensor, TokenSet]:
    """One sample's rows [n, d] after a selection: every non-visual row (image -1; other negative ids, such as
    pi0's masked camera, go) and each image's kept rows; merged tokens go right after their image's kept rows,
    at their origin's position."""
    keep = tokens.image == -1
    for i, kept in enumerate(selection.kept):
        keep[tokens.visual_rows(i)[kept.to(keep.device)]] = True
    rows = torch.nonzero(keep).flatten()
    hidden, tokens = hidden[rows], tokens.select(rows)
    for i, merged in enumerate(selection.merged or []):
        image_rows = torch.nonzero(tokens.image == i).flatten()
        after = (int(image_rows[-1]) + 1 if len(image_rows)
                 else int((tokens.position < image_starts[i]).sum()))
        hidden = torch.cat([hidden[:after], merged.features.to(hidden.dtype), hidden[after:]])
        tokens = tokens.insert(after, image_starts[i] + merged.origin.to(tokens.position.device), image=i)
    return hidden, tokens


@dataclass
class ActionAttention:
    """The attention one sample's action queries paid to the prefill's tokens, summed over query rows, action
    layers (and steps).

    Sums stay on the device, one per key of `add` (the runner's choice: rows that share a token set, or a
    layer), and reach the ORIGINAL visual tokens once per query, in `mean` (pruned tokens get nothing)."""

    sums: dict[Hashable, tuple[TokenSet, torch.Tensor]] = field(default_factory=dict)
    rows: int = 0

    def add(self, total: torch.Tensor, rows: int, tokens: TokenSet, key: Hashable) -> None:
        """Add `total` [keys], the attention of `rows` query rows summed over them, at a layer whose first keys
        are `tokens` (later keys, such as decoded tokens or padding, are ignored)."""
        if key in self.sums:
            self.sums[key][1].add_(total)
        else:
            self.sums[key] = (tokens, total)
        self.rows += rows

    def mean(self, images: Sequence[slice]) -> list[torch.Tensor]:
        """Per image (its original positions), the mean over heads, query rows and layers, in original visual
        order, zero where pruned (merged tokens are skipped)."""
        if not self.rows:
            raise RuntimeError("no action attention was probed in this query")
        device = next(iter(self.sums.values()))[1].device
        means = [torch.zeros(s.stop - s.start, device=device) for s in images]
        for tokens, total in self.sums.values():
            for i, s in enumerate(images):
                rows = tokens.original_visual_rows(i)
                means[i].index_add_(0, tokens.position[rows] - s.start, total[rows])
        return [m / self.rows for m in means]
