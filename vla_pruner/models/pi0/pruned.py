"""Visual-token pruning in pi0 (spec pi0.md, "Pruning in pi0"), driven by the same Pruner interface as the Llama
engine (`vla_pruner.engine`), translated to pi0's two Gemmas.

- Visual tokens are the VALID cameras' tokens (`pi0_layout`: 256 per valid camera). `sample_actions` and the
  policy leave the empty camera out of the prefix (`Pi0` `without_empty_cameras`); given a masked slot anyway
  (as LeRobot's inputs carry it), its rows are no budget: they run until the first cut and are dropped there.
- A stage at layer K-1 runs prefix layers up to K-1 and hands each sample's pruner what it asked for, from the
  bidirectional prefix: rows "prefill" = every valid prefix row (visual and language, padding and a masked camera
  excluded: the paper's M + N prefill rows), "text" = the valid language rows, "last" = the last valid language
  row (the prompt's closing newline); attention = their head-averaged probabilities over the visual keys at layer
  K-1; embeddings = the prefix's input embeddings; hidden = layer K-1's outputs.
- Kept rows keep their original position ids (cumsum of the ORIGINAL valid mask); later prefix layers run on them
  only, so each layer's cache holds only kept keys, and every expert step attends to exactly those keys.
- Action relevance: at the plan's action layers, the expert's 50 action rows' head-averaged attention to the
  prefix's visual keys, summed on the device over rows, layers and the 10 Euler steps, mapped to the original
  tokens once per query (zero where pruned) and handed to `observe()` as the mean.
A batch holds one pruner per sample; samples whose row counts differ after a cut run padded to one length with
masked rows (masked keys get exactly zero probability). An empty plan runs `Pi0.run_prefix` / `integrate` as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from vla_pruner.layout import TokenSet
from vla_pruner.protocol import (ActionAttention, Offers, QueryTrace, check_pruners, gather, has_work, row_attention,
                                 stage_inputs as protocol_stage_inputs)
from vla_pruner.pruning import ModelLayout, Pruner, Stage, StageInputs

from vla_pruner.models.pi0.model import Pi0, PrefixCache, without_empty_cameras
from vla_pruner.models.pi0.layers import block_mask

EMPTY_CAMERA = -2  # TokenSet.image of a masked camera slot's rows (-1: language)


def pi0_layout(model_or_config, valid_cameras: int) -> ModelLayout:
    """What a pruner may know of pi0: the VLM's depth and 256 visual tokens per valid camera."""
    config = getattr(model_or_config, "config", model_or_config)
    return ModelLayout(num_layers=config.vlm.depth, image_tokens=(config.vision.num_patches,) * valid_cameras)


@dataclass
class Pi0Query:
    """One pruned query over a batch: made by `prefill`, used by `integrate`, closed by `finish`."""

    pruners: list[Pruner]  # per sample, one plan
    cache: PrefixCache
    layer_rows: list[list[TokenSet]]  # per VLM layer, each sample's rows (its cached keys, padding after them)
    traces: list[QueryTrace]
    image_starts: list[int]  # original prefix index of each valid camera's first token
    actions: list[ActionAttention] = field(default_factory=list)  # per sample, summed by expert layer

    @property
    def plan(self):
        return self.pruners[0].plan

    @property
    def images(self) -> list[slice]:
        """Each valid camera's original prefix rows."""
        tokens = self.pruners[0].layout.image_tokens
        return [slice(start, start + m) for start, m in zip(self.image_starts, tokens)]


# pi0's prefix deletes the rows a stage leaves out, at their original positions
OFFERS = Offers("pi0's pruned prefix")


def unsupported(plan) -> str | None:
    """Why pi0's prefix cannot run a plan (None: it can)."""
    return OFFERS.refusal(plan)


def prefill(model: Pi0, embeds: torch.Tensor, valid: torch.Tensor, image_masks: torch.Tensor,
            pruners: Sequence[Pruner]) -> Pi0Query:
    """The prefix pass of a batch [B, P, w] (`Pi0.embed_prefix`'s outputs) with each sample's pruner."""
    B, P = valid.shape
    pruners = check_pruners(pruners, B, OFFERS)
    cameras = image_masks.to(torch.bool).cpu()
    if not (cameras == cameras[0]).all():
        raise ValueError("every sample of a pruned batch needs the same valid cameras")
    n, depth = model.config.vision.num_patches, model.config.vlm.depth
    valid_cams = torch.nonzero(cameras[0]).flatten().tolist()
    layout_tokens = pruners[0].layout.image_tokens
    if len(layout_tokens) != len(valid_cams) or pruners[0].layout.num_layers != depth:
        raise ValueError(f"the pruners' layout {pruners[0].layout} does not fit {len(valid_cams)} valid cameras "
                         f"of a {depth}-layer pi0")
    starts = [cam * n for cam in valid_cams]
    image = torch.full((P,), -1, dtype=torch.long, device=valid.device)
    image[:image_masks.shape[1] * n] = EMPTY_CAMERA
    for i, start in enumerate(starts):
        image[start:start + n] = i
    full = TokenSet(torch.arange(P, device=valid.device), image, torch.zeros(P, dtype=torch.bool, device=valid.device))
    query = Pi0Query(pruners, PrefixCache(offset=valid.sum(dim=1)), [], [QueryTrace(sum(layout_tokens))
                     for _ in range(B)], starts, [ActionAttention() for _ in range(B)])
    if not has_work(query.plan):  # the dense model, computed as Pi0.run_prefix computes it
        query.cache, _ = model.run_prefix(embeds, valid)
        query.layer_rows = [[full] * B] * depth
    else:
        _pruned_prefix(model, query, embeds, valid, full)
    for b, trace in enumerate(query.traces):
        trace.prefill_tokens = [len(rows[b]) for rows in query.layer_rows]
        trace.kept_visual = int((query.layer_rows[-1][b].image >= 0).sum())
    return query


def _pruned_prefix(model: Pi0, query: Pi0Query, embeds: torch.Tensor, valid: torch.Tensor, full: TokenSet) -> None:
    B = valid.shape[0]
    positions = torch.cumsum(valid.long(), dim=1) - 1  # original position ids: kept rows keep theirs
    rows, hidden, start = [full] * B, embeds, 0

    def run(stop: int, probes=None) -> torch.Tensor:
        width = hidden.shape[1]
        index = torch.stack([padded(r.position, width) for r in rows])
        present = torch.stack([torch.arange(width, device=valid.device) < len(r) for r in rows])
        row_valid = torch.gather(valid, 1, index) & present
        allowed = block_mask(row_valid, torch.zeros_like(index))
        query.layer_rows.extend([list(rows)] * (stop - start))
        return model.prefix_layers(hidden, torch.gather(positions, 1, index), allowed, row_valid, query.cache,
                                   start, stop, probes)

    for index, stage in enumerate(query.plan.stages):
        seen: dict[str, torch.Tensor] = {}
        probes = {stage.layer: lambda probs: seen.update(probs=probs)} if stage.rows is not None else None
        hidden = run(stage.layer + 1, probes)
        selections = [pruner.select(stage_inputs(index, stage, b, rows[b], seen.get("probs"), embeds, valid,
                                                 hidden, len(query.image_starts)))
                      for b, pruner in enumerate(query.pruners)]
        for trace, selection in zip(query.traces, selections):
            trace.selections.append(selection)
        start = stage.layer + 1
        if not all(s.is_dense for s in selections):
            kept = [(hidden[b, :len(rows[b])], rows[b]) if s.is_dense  # a dense choice keeps its rows as they are
                    else gather(rows[b], hidden[b, :len(rows[b])], s, query.image_starts)
                    for b, s in enumerate(selections)]
            rows = [r for _, r in kept]
            width = max(len(r) for r in rows)
            hidden = torch.stack([torch.nn.functional.pad(h, (0, 0, 0, width - len(h))) for h, _ in kept])
    run(model.config.vlm.depth)


def padded(index: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(index, (0, width - len(index)))


def stage_inputs(index: int, stage: Stage, b: int, rows: TokenSet, probs: torch.Tensor | None,
                 embeds: torch.Tensor, valid: torch.Tensor, hidden: torch.Tensor | None, images: int) -> StageInputs:
    """What sample b's pruner sees at a stage, from its own rows (never the batch's padding)."""
    visual = [rows.visual_rows(i) for i in range(images)]
    row_valid = valid[b, rows.position]
    language = torch.nonzero((rows.image == -1) & row_valid).flatten()
    attention = None
    if stage.rows is not None:
        queries = {"last": language[-1:], "text": language, "prefill": torch.nonzero(row_valid).flatten()}[stage.rows]
        attention = row_attention(probs[b][:, queries].float().mean(0), stage.rows)  # heads averaged
    return protocol_stage_inputs(index, stage, visual, attention, embeds[b], rows, rows.position[language],
                                 None if hidden is None else hidden[b])


def integrate(model: Pi0, query: Pi0Query, state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`Pi0.integrate` over the query's (pruned) cache; with action layers in the plan, each step's action rows'
    attention to the prefix keys is summed into each sample's `query.actions`."""
    layers = query.plan.action_layers
    chunk = model.config.chunk_size

    def probe_at(layer: int):
        def probe(probs: torch.Tensor) -> None:
            keys = query.cache.keys[layer].shape[2]
            total = probs[:, :, -chunk:, :keys].mean(1).sum(1)  # [B, keys]
            for b, action in enumerate(query.actions):
                action.add(total[b], chunk, query.layer_rows[layer][b], key=layer)

        return probe

    return model.integrate(query.cache, state, noise, {layer: probe_at(layer) for layer in layers})


def action_attention(query: Pi0Query, b: int) -> list[torch.Tensor]:
    """Sample b's action attention per valid camera, in original token order: the mean over heads, action rows,
    action layers and Euler steps, zero where pruned (merged tokens are skipped)."""
    return query.actions[b].mean(query.images)


def finish(query: Pi0Query) -> None:
    """Hand each sample's pruner its action attention (plans with action layers)."""
    if query.plan.action_layers:
        for b, pruner in enumerate(query.pruners):
            pruner.observe(action_attention(query, b))


def sample_actions(model: Pi0, pixel_values: torch.Tensor, image_masks: torch.Tensor, state: torch.Tensor,
                   tokens: torch.Tensor, token_masks: torch.Tensor, noise: torch.Tensor,
                   pruners: Sequence[Pruner]) -> tuple[torch.Tensor, Pi0Query]:
    """`Pi0.sample_actions` with pruning: (the padded chunk [B, chunk, 32], the finished query)."""
    with torch.inference_mode():
        pixel_values, image_masks = without_empty_cameras(pixel_values, image_masks)
        embeds, valid = model.embed_prefix(pixel_values, image_masks, tokens, token_masks)
        query = prefill(model, embeds, valid, image_masks, pruners)
        chunk = integrate(model, query, model.pad_state(state), noise.to(model.device, torch.float32))
        finish(query)
    return chunk, query
