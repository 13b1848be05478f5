"""pi0's compute per query (MACs, as evaluate/analysis/flops.py counts them), counted from its sizes.

- prefix: the paper's LLM convention per VLM layer with n tokens, `4*n*d^2 + 2*n^2*d + 3*n*d*m`; dense =
  3 camera slots x 256 + 48 language slots = 816 tokens at every layer (openpi and LeRobot compute the empty
  camera's rows and the padding too, masked); pruned = the same through layer K-1, then the two valid cameras'
  kept tokens + 48 (the empty camera is no budget and its rows are dropped with the pruned ones).
- expert: 10 Euler steps, each over the 51 suffix tokens at every expert layer, with exact projection widths
  (8 query heads, 1 key/value head) and attention over [that layer's prefix keys | 51 suffix keys], plus the
  state/action/time projections.
  Also reported: both counts without the empty camera's rows in the dense prefix (2 x 256 + 48 = 560 tokens),
  which is how the paper's 60.9% at keep 0.5 comes out (61.5% of the prefix with K = 3).
- vision: SigLIP on all three slots (the empty one is encoded too) and the projector.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from evaluate.analysis.macs import DEFAULT_PRUNE_LAYER, TERA, UNIT, UNIT_NOTE, layer_macs
from vla_pruner.models.pi0_config import REAL_PI0, Pi0Config

PAPER_FLOPS_RATIO_50 = 60.9  # % of dense at 50% retention (paper Table 4; shared/reference/paper_table4_pi0.csv)


@dataclass(frozen=True)
class Pi0Macs:
    vision: int
    prefix: int
    expert: int  # all Euler steps

    @property
    def total(self) -> int:
        return self.vision + self.prefix + self.expert


def vision_macs(c: Pi0Config) -> int:
    v, n = c.vision, c.vision.num_patches
    d, m = v.hidden_size, v.intermediate_size
    per_image = n * 3 * v.patch_size ** 2 * d + v.num_hidden_layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    return c.num_cameras * (per_image + n * d * c.vlm.width)


def prefix_schedule(c: Pi0Config, kept_per_camera: int | None, prune_layer: int, empty_rows: bool = True) -> list[int]:
    """Prefix tokens per VLM layer: all slots (`empty_rows=False`: without the empty camera's), or from layer
    `prune_layer` on the valid cameras' kept tokens."""
    dense = c.prefix_length - (0 if empty_rows else c.vision.num_patches)
    if kept_per_camera is None:
        return [dense] * c.vlm.depth
    if not 0 <= prune_layer < c.vlm.depth:
        raise ValueError(f"prune layer {prune_layer} outside 0..{c.vlm.depth - 1}")
    pruned = (c.num_cameras - 1) * kept_per_camera + c.max_token_len  # the empty camera: no budget, dropped
    return [dense] * prune_layer + [pruned] * (c.vlm.depth - prune_layer)


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
             empty_rows: bool = True) -> Pi0Macs:
    return recorded_macs(c, prefix_schedule(c, kept_per_camera, prune_layer, empty_rows))


def recorded_macs(c: Pi0Config, prefix_tokens: list[int]) -> Pi0Macs:
    """One query's counts from the prefix tokens each VLM layer ran on (a query record's `prefill_tokens`): the
    expert's keys at layer l are layer l's prefix rows, so its count follows the kept tokens too."""
    if len(prefix_tokens) != c.vlm.depth:
        raise ValueError(f"{len(prefix_tokens)} per-layer token counts for a {c.vlm.depth}-layer pi0 prefix")
    return Pi0Macs(vision_macs(c), sum(layer_macs(n, c.vlm.width, c.vlm.mlp_dim) for n in prefix_tokens),
                   expert_macs(c, list(prefix_tokens)))


def pi0_architecture(model_cfg: Mapping) -> Pi0Config:
    """The local checkpoint's sizes if there is one, the tiny model's for a seeded model, else the real pi0's."""
    from vla_pruner.models.pi0_checkpoint import inspect_pi0, read_pi0_config
    from vla_pruner.models.pi0_tiny import TINY_PI0

    checkpoint = model_cfg.get("checkpoint")
    if checkpoint and (Path(checkpoint).expanduser() / "config.json").is_file():
        return read_pi0_config(inspect_pi0(Path(checkpoint).expanduser()))
    return TINY_PI0 if model_cfg.get("build_seed") is not None else REAL_PI0


def pi0_report_lines(model_cfg: Mapping, pruner_cfg: Mapping, keep: float) -> list[str]:
    """`python -m evaluate.flops model=pi0 keep=K`: dense and pruned counts, prefix and expert apart; last line
    the pruned total in TMACs."""
    c = pi0_architecture(model_cfg)
    from evaluate.config import ConfigError

    # the pruner's K, else the project's default (3), within a shallow (tiny) VLM's depth
    prune_layer = int(pruner_cfg.get("prune_layer", min(DEFAULT_PRUNE_LAYER, c.vlm.depth - 1)))
    if not 0 <= prune_layer < c.vlm.depth:
        raise ConfigError(f"pruner.prune_layer={prune_layer} is outside 0..{c.vlm.depth - 1} "
                          f"({model_cfg['name']}'s VLM has {c.vlm.depth} layers)")
    kept = round(keep * c.vision.num_patches)
    dense, pruned = pi0_macs(c), pi0_macs(c, kept, prune_layer)
    lean_dense, lean = pi0_macs(c, empty_rows=False), pi0_macs(c, kept, prune_layer, empty_rows=False)
    t = lambda macs: format(macs / TERA, ".6g")  # noqa: E731
    ratio = lambda a, b: f"{100 * a / b:.1f}%"  # noqa: E731
    return [
        f"model {model_cfg['name']}: VLM d={c.vlm.width} m={c.vlm.mlp_dim} L={c.vlm.depth}, expert d={c.expert.width} "
        f"m={c.expert.mlp_dim}, SigLIP {c.vision.hidden_size} x {c.vision.num_hidden_layers}, "
        f"prefix {c.prefix_length} tokens, suffix {c.suffix_length} x {c.num_steps} steps",
        f"unit: {UNIT_NOTE}",
        f"keep={keep}: cut before layer K={prune_layer}, {kept} tokens per valid camera "
        f"({prefix_schedule(c, kept, prune_layer)[-1]} prefix tokens from there)",
        f"prefix  dense / pruned: {t(dense.prefix)} / {t(pruned.prefix)} {UNIT} ({ratio(pruned.prefix, dense.prefix)})",
        f"expert  dense / pruned ({c.num_steps} steps): {t(dense.expert)} / {t(pruned.expert)} {UNIT} "
        f"({ratio(pruned.expert, dense.expert)})",
        f"prefix + expert dense / pruned: {t(dense.prefix + dense.expert)} / {t(pruned.prefix + pruned.expert)} "
        f"{UNIT} ({ratio(pruned.prefix + pruned.expert, dense.prefix + dense.expert)}; paper at keep 0.5: "
        f"{PAPER_FLOPS_RATIO_50}%)",
        f"the same without the empty camera's rows (dense {c.prefix_length - c.vision.num_patches} prefix tokens): "
        f"prefix {ratio(lean.prefix, lean_dense.prefix)}, prefix + expert "
        f"{ratio(lean.prefix + lean.expert, lean_dense.prefix + lean_dense.expert)}",
        f"full query (+ vision {t(dense.vision)}) dense / pruned: {t(dense.total)} / {t(pruned.total)} {UNIT} "
        f"({ratio(pruned.total, dense.total)})",
        t(pruned.prefix + pruned.expert),
    ]
