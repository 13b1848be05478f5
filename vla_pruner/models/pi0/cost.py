"""pi0's compute per query (MACs, unit and shared formulas in vla_pruner.macs), counted from its sizes.

- prefix: the paper's LLM convention per VLM layer with n tokens, `4*n*d^2 + 2*n^2*d + 3*n*d*m`; dense = the two
  valid cameras x 256 + 48 language slots = 560 tokens at every layer (openpi's LIBERO client adds an empty,
  masked third camera, which the policy leaves out of the prefix: it is never a key, so the outputs are the same);
  pruned = the same until the pruner's cut, then the valid cameras' kept tokens + 48 (progressive SparseVLM: its
  stage counts). `empty_rows=True` counts inputs that carry the empty camera (816 tokens until the cut), as
  openpi and LeRobot compute them.
- expert: 10 Euler steps, each over the 51 suffix tokens at every expert layer, with exact projection widths
  (8 query heads, 1 key/value head) and attention over [that layer's prefix keys | 51 suffix keys], plus the
  state/action/time projections.
- vision: SigLIP on the camera slots encoded (the two valid ones; with `empty_rows`, all three) and the projector.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from vla_pruner.macs import TERA, UNIT, UNIT_NOTE, QueryMacs, layer_macs, stage_schedule
from vla_pruner.pruning import DEFAULT_PRUNE_LAYER, check_prune_layer
from vla_pruner.models.pi0.config import REAL_PI0, Pi0Config

PAPER_FLOPS_RATIO_50 = 60.9  # % of dense at 50% retention (paper Table 4; shared/reference/paper_table4_pi0.csv)


@dataclass(frozen=True)
class Pi0Macs:
    vision: int
    prefix: int
    expert: int  # all Euler steps

    @property
    def total(self) -> int:
        return self.vision + self.prefix + self.expert


EMPTY_SLOTS = 1  # of pi0's 3 image slots, openpi's LIBERO client leaves one empty (masked)


def cameras(c: Pi0Config, empty_rows: bool = False) -> int:
    """Camera slots a query encodes and puts in its prefix: the valid ones, or all with the empty one's rows."""
    return c.num_cameras if empty_rows else c.num_cameras - EMPTY_SLOTS


def vision_macs(c: Pi0Config, empty_rows: bool = False) -> int:
    v, n = c.vision, c.vision.num_patches
    d, m = v.hidden_size, v.intermediate_size
    per_image = n * 3 * v.patch_size ** 2 * d + v.num_hidden_layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    return cameras(c, empty_rows) * (per_image + n * d * c.vlm.width)


def dense_prefix(c: Pi0Config, empty_rows: bool = False) -> int:
    return cameras(c, empty_rows) * c.vision.num_patches + c.max_token_len


def prefix_schedule(c: Pi0Config, kept_per_camera: int | None, prune_layer: int, empty_rows: bool = False) -> list[int]:
    """Prefix tokens per VLM layer of one cut before layer `prune_layer` keeping `kept_per_camera` tokens of each
    valid camera (None: dense); the empty camera's rows (`empty_rows`) run until the cut."""
    dense = dense_prefix(c, empty_rows)
    if kept_per_camera is None:
        return [dense] * c.vlm.depth
    check_prune_layer(prune_layer, c.vlm.depth, lowest=0)
    pruned = cameras(c) * kept_per_camera + c.max_token_len
    return [dense] * prune_layer + [pruned] * (c.vlm.depth - prune_layer)


def plan_prefix_schedule(c: Pi0Config, pruner) -> list[int]:
    """Prefix tokens per VLM layer of a query a built pruner prunes, as the policy runs it (`stage_schedule`)."""
    return stage_schedule(pruner, c.vlm.depth, dense_prefix(c), c.max_token_len)


def expert_macs(c: Pi0Config, prefix_keys: list[int]) -> int:
    e, s = c.expert, c.suffix_length
    q_width, kv_width = e.num_heads * e.head_dim, e.num_kv_heads * e.head_dim
    per_step = sum(s * (2 * e.width * q_width + 2 * e.width * kv_width) + 2 * s * (n + s) * q_width
                   + 3 * s * e.width * e.mlp_dim for n in prefix_keys)
    a = c.chunk_size
    per_step += e.width * c.max_state_dim + a * (c.max_action_dim * e.width + 3 * e.width * e.width
                                                 + e.width * c.max_action_dim)
    return c.num_steps * per_step


def pi0_macs(c: Pi0Config, kept_per_camera: int | None = None, prune_layer: int = DEFAULT_PRUNE_LAYER,
             empty_rows: bool = False) -> Pi0Macs:
    return recorded_macs(c, prefix_schedule(c, kept_per_camera, prune_layer, empty_rows), empty_rows)


def recorded_macs(c: Pi0Config, prefix_tokens: list[int], empty_rows: bool = False) -> Pi0Macs:
    """One query's counts from the prefix tokens each VLM layer ran on (a query record's `prefill_tokens`): the
    expert's keys at layer l are layer l's prefix rows, so its count follows the kept tokens too."""
    if len(prefix_tokens) != c.vlm.depth:
        raise ValueError(f"{len(prefix_tokens)} per-layer token counts for a {c.vlm.depth}-layer pi0 prefix")
    return Pi0Macs(vision_macs(c, empty_rows), sum(layer_macs(n, c.vlm.width, c.vlm.mlp_dim) for n in prefix_tokens),
                   expert_macs(c, list(prefix_tokens)))


def pi0_architecture(model_cfg: Mapping) -> Pi0Config:
    """The local checkpoint's sizes if there is one, the tiny model's for a seeded model, else the real pi0's."""
    from vla_pruner.models.pi0.checkpoint import inspect_pi0, read_pi0_config
    from vla_pruner.models.pi0.tiny import TINY_PI0

    checkpoint = model_cfg.get("checkpoint")
    if checkpoint and (Path(checkpoint).expanduser() / "config.json").is_file():
        return read_pi0_config(inspect_pi0(Path(checkpoint).expanduser()))
    return TINY_PI0 if model_cfg.get("build_seed") is not None else REAL_PI0


def pi0_cost(model_cfg: Mapping, family=None) -> "Pi0Cost":
    """The pi0 family's `cost`: the sizes of the model a `cfg.model` node describes (`pi0_architecture`)."""
    return Pi0Cost(pi0_architecture(model_cfg))


@dataclass(frozen=True)
class Pi0Cost:
    """pi0 without weights, as the harness counts it (`vla_pruner.macs.ModelCost`): the pruners cut its VLM."""

    config: Pi0Config

    @property
    def num_layers(self) -> int:
        return self.config.vlm.depth

    def recorded_macs(self, prefill_tokens: list[int], prefill_keys: list[int] | None,
                      decode_steps: int | None) -> QueryMacs:
        """The prefix (the paper's convention) and vision + prefix + expert; the keys are the prefix's own rows."""
        macs = recorded_macs(self.config, prefill_tokens)
        return QueryMacs(macs.prefix, macs.total)

    def report_lines(self, name: str, pruner, keep: float, prompt_tokens: int | None) -> list[str]:
        """Dense and pruned counts, prefix and expert apart; last line the pruned prefix + expert in TMACs
        (`prompt_tokens` does not apply: the prefix holds pi0's fixed 48 language slots)."""
        c = self.config
        schedule = plan_prefix_schedule(c, pruner)
        dense, pruned = pi0_macs(c), recorded_macs(c, schedule)
        with_empty = pi0_macs(c, empty_rows=True)
        t = lambda macs: format(macs / TERA, ".6g")  # noqa: E731
        ratio = lambda a, b: f"{100 * a / b:.1f}%"  # noqa: E731
        cuts = "; ".join(f"cut before layer K={s.layer + 1}, {schedule[s.layer + 1]} prefix tokens from there"
                         for s in pruner.plan.stages) or "no cut: it keeps every token"
        return [
            f"model {name}: VLM d={c.vlm.width} m={c.vlm.mlp_dim} L={c.vlm.depth}, expert d={c.expert.width} "
            f"m={c.expert.mlp_dim}, SigLIP {c.vision.hidden_size} x {c.vision.num_hidden_layers}, "
            f"prefix {dense_prefix(c)} tokens ({cameras(c)} valid cameras; the empty one is left out), "
            f"suffix {c.suffix_length} x {c.num_steps} steps",
            f"unit: {UNIT_NOTE}",
            f"pruner={pruner.name}, keep={keep}: {cuts}",
            f"prefix  dense / pruned: {t(dense.prefix)} / {t(pruned.prefix)} {UNIT} ({ratio(pruned.prefix, dense.prefix)}; "
            f"paper at keep 0.5: {PAPER_FLOPS_RATIO_50}%)",
            f"expert  dense / pruned ({c.num_steps} steps): {t(dense.expert)} / {t(pruned.expert)} {UNIT} "
            f"({ratio(pruned.expert, dense.expert)})",
            f"prefix + expert dense / pruned: {t(dense.prefix + dense.expert)} / {t(pruned.prefix + pruned.expert)} "
            f"{UNIT} ({ratio(pruned.prefix + pruned.expert, dense.prefix + dense.expert)})",
            f"dense with the empty camera computed, as openpi and LeRobot do ({dense_prefix(c, True)} prefix tokens): "
            f"prefix {t(with_empty.prefix)}, prefix + expert {t(with_empty.prefix + with_empty.expert)}, "
            f"+ vision {t(with_empty.total)} {UNIT}",
            f"full query (+ vision {t(dense.vision)}) dense / pruned: {t(dense.total)} / {t(pruned.total)} {UNIT} "
            f"({ratio(pruned.total, dense.total)})",
            t(pruned.prefix + pruned.expert),
        ]
