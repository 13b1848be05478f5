"""The compute cost of an OpenVLA-architecture query (OpenVLA, OpenVLA-OFT): its dimensions read from a config
without weights, and its MACs (unit and shared formulas: vla_pruner.macs).

Two counts:
- the paper's analytic LLM-prefill count (`analytic_prefill_macs`), per decoder layer with n tokens
  `4*n*d^2 + 2*n^2*d + 3*n*d*m` (four attention projections, scores + weighted sum, three MLP matrices),
  summed over a per-layer token-count list (layers 0..K-1 full, K.. kept; SparseVLM's schedule fits too).
  A KV-reusing query (VLA-Cache) has more keys than queries: its reused visual tokens are keys (carried from the
  previous query) but not queries, so layer l counts `4*n*d^2 + 2*n*k*d + 3*n*d*m` with n = the rows it
  computes and k = the keys it attends to (every position).
- `full_query_macs`: end to end, all matrix products: both ViTs (patch embedding + the blocks that run),
  the projector, the prefill (exact k/v widths for grouped-query attention), the LM-head rows computed and
  the decode steps with their real KV-cache lengths (layer l's cache holds what layer l kept in prefill).
A family of the OpenVLA architecture states the shape of its query (and what its checkpoints hold) in an
`OpenVLAVariant`, which is its record's `cost`.
Neither counts element-wise work (norms, activations, softmax, RoPE), embedding look-ups, pruning probes or
OpenVLA-OFT's action head and proprio projector. `torch.utils.flop_counter.FlopCounterMode` counts attention as
non-causal (full n x n scores), which is also the convention here: its total = 2 x `full_query_macs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from vla_pruner.families import VISUAL_TOKENS_PER_IMAGE
from vla_pruner.macs import TERA, UNIT, UNIT_NOTE, QueryMacs, prefill_macs, stage_schedule

if TYPE_CHECKING:
    from vla_pruner.families import ModelFamily

# Non-visual tokens of a typical LIBERO OpenVLA prompt ([BOS] + "In: What action should the robot take to
# ...?\nOut:" + 29871): 256 + 35 = 291, the sequence length the paper's 1.906 T refers to.
DEFAULT_PROMPT_TOKENS = 35


@dataclass(frozen=True)
class LlmDims:
    hidden: int  # d
    intermediate: int  # m
    num_layers: int  # L
    num_heads: int
    num_kv_heads: int
    vocab_size: int

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.num_kv_heads // self.num_heads


@dataclass(frozen=True)
class VitDims:
    """The part of a timm ViT that runs: patch embedding and `blocks_run` blocks over all its tokens."""

    embed_dim: int
    mlp_dim: int
    blocks_run: int
    patch_size: int
    in_chans: int
    num_patches: int
    prefix_tokens: int  # cls + register tokens

    def macs(self) -> int:
        n, d = self.num_patches + self.prefix_tokens, self.embed_dim
        patch_embed = self.num_patches * self.in_chans * self.patch_size**2 * d
        block = 4 * n * d * d + 2 * n * n * d + 2 * n * d * self.mlp_dim  # qkv + proj, scores + AV, fc1 + fc2
        return patch_embed + self.blocks_run * block


@dataclass(frozen=True)
class VlaDims:
    """An OpenVLA-architecture model without weights: the `ModelCost` of the openvla and openvla_oft families."""

    llm: LlmDims
    vits: tuple[VitDims, ...]  # run once per image
    projector: tuple[tuple[int, int], ...]  # (in, out) of each Linear, applied to every visual token
    family: ModelFamily
    variant: OpenVLAVariant  # the query's shape beyond the images (the family record's `cost`)

    @property
    def num_layers(self) -> int:
        return self.llm.num_layers

    def sequence_length(self, prompt_tokens: int, kept_per_image: int = VISUAL_TOKENS_PER_IMAGE) -> int:
        return prompt_tokens + self.variant.extra_tokens + self.family.num_images * kept_per_image

    def recorded_macs(self, prefill_tokens: list[int], prefill_keys: list[int] | None,
                      decode_steps: int | None) -> QueryMacs | None:
        if len(prefill_tokens) != self.llm.num_layers:
            return None
        return QueryMacs(analytic_prefill_macs(self, prefill_tokens, prefill_keys),
                         full_query_macs(self, prefill_tokens, decode_steps, prefill_keys)["total"])

    def report_lines(self, name: str, pruner, keep: float, prompt_tokens: int | None) -> list[str]:
        """Dense and pruned prefill counts, and the full query's; the pruner's per-layer counts come from its plan:
        no stages (pruner=none) = dense, one stage = one cut, progressive SparseVLM = its stage counts."""
        prompt_tokens = prompt_tokens or DEFAULT_PROMPT_TOKENS
        llm = self.llm
        dense = [self.sequence_length(prompt_tokens)] * llm.num_layers
        pruned, keys = plan_schedule(pruner, self, prompt_tokens), plan_keys(pruner, self, prompt_tokens)
        if keys:  # VLA-Cache: the most reuse its configured rules allow, from the first reuse layer (a query can reach it)
            cuts = (f"the most reuse its rules allow (budget={pruner.config.budget}), reused keys from layer "
                    f"{pruner.plan.stages[0].layer + 1}: {pruned[-1]} of {keys[0]} tokens are queries, all {keys[0]} are keys")
        else:
            cuts = "; ".join(f"cut before layer K={s.layer + 1}, {pruned[s.layer + 1]} tokens from there"
                             for s in pruner.plan.stages) or "no cut: it keeps every token"
        to_t = lambda macs: format(macs / TERA, ".6g")  # noqa: E731
        pruned_tmacs = to_t(analytic_prefill_macs(self, pruned, keys))
        return [
            f"model {name}: LLM d={llm.hidden} m={llm.intermediate} L={llm.num_layers}, "
            f"{self.family.num_images} image(s) x {VISUAL_TOKENS_PER_IMAGE} visual tokens, prompt {prompt_tokens} tokens",
            f"unit: {UNIT_NOTE}",
            f"dense  prefill ({dense[0]} tokens): {to_t(analytic_prefill_macs(self, dense))} {UNIT}",
            f"pruned prefill (pruner={pruner.name}, keep={keep}, {cuts}): {pruned_tmacs} {UNIT}",
            f"full query, dense / pruned (vision + projector + prefill + decode): "
            f"{to_t(full_query_macs(self, dense)['total'])} / "
            f"{to_t(full_query_macs(self, pruned, prefill_keys=keys)['total'])} {UNIT}",
            pruned_tmacs,
        ]


# ------------------------------------------------------------------------------------------------ counts


def plan_schedule(pruner, dims: VlaDims, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> list[int]:
    """Per-layer prefill tokens of a query that `pruner` prunes, once its history is warm (`stage_schedule`)."""
    return stage_schedule(pruner, dims.llm.num_layers, dims.sequence_length(prompt_tokens),
                          dims.sequence_length(prompt_tokens, 0))


def vision_macs(dims: VlaDims) -> int:
    """Both ViTs and the projector, for every image of a query."""
    per_image = sum(v.macs() for v in dims.vits)
    per_image += VISUAL_TOKENS_PER_IMAGE * sum(i * o for i, o in dims.projector)
    return dims.family.num_images * per_image


def llm_pass_macs(llm: LlmDims, n_queries: int, n_keys: int) -> int:
    """One decoder layer on n_queries new tokens attending to n_keys keys, with the real k/v widths."""
    d = llm.hidden
    projections = n_queries * (2 * d * d + 2 * d * llm.kv_dim)
    attention = 2 * n_queries * n_keys * d
    return projections + attention + 3 * n_queries * d * llm.intermediate


def plan_keys(pruner, dims: VlaDims, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> list[int] | None:
    """Per-layer keys of a KV-reusing pruner's query (every position, reused ones included); None for the others,
    whose layers attend to the tokens they process."""
    if pruner.plan.reuse is None:
        return None
    return [dims.sequence_length(prompt_tokens)] * dims.llm.num_layers


def full_query_macs(dims: VlaDims, prefill_tokens: Sequence[int], decode_steps: int | None = None,
                    prefill_keys: Sequence[int] | None = None) -> dict[str, int]:
    """End-to-end MACs of one query, by stage; `prefill_tokens[l]` = tokens layer l processed, `prefill_keys[l]`
    = keys it attended to and cached (default: the same)."""
    llm = dims.llm
    keys = prefill_tokens if prefill_keys is None else prefill_keys
    if len(prefill_tokens) != llm.num_layers or len(keys) != llm.num_layers:
        raise ValueError(f"{len(prefill_tokens)} per-layer token counts for a {llm.num_layers}-layer LLM")
    steps = dims.variant.decode_steps if decode_steps is None else decode_steps
    head = llm.hidden * llm.vocab_size
    prefill = sum(llm_pass_macs(llm, n, k) for n, k in zip(prefill_tokens, keys))
    prefill += dims.variant.prefill_logit_rows * head
    decode = sum(llm_pass_macs(llm, 1, k + i + 1) for i in range(steps) for k in keys) + steps * head
    counts = {"vision": vision_macs(dims), "prefill": prefill, "decode": decode}
    counts["total"] = sum(counts.values())
    return counts


def analytic_prefill_macs(dims: VlaDims, prefill_tokens: Sequence[int], prefill_keys: Sequence[int] | None = None) -> int:
    return prefill_macs(prefill_tokens, dims.llm.hidden, dims.llm.intermediate, prefill_keys)


# ---------------------------------------------------------------------------------- dims from a config


def llm_dims(config) -> LlmDims:
    """From an `OpenVLAConfig` (transformers-4.40 Llama defaults filled in)."""
    lc = config.llama_config()
    return LlmDims(hidden=lc.hidden_size, intermediate=lc.intermediate_size, num_layers=lc.num_hidden_layers,
                   num_heads=lc.num_attention_heads, num_kv_heads=lc.num_key_value_heads or lc.num_attention_heads,
                   vocab_size=lc.vocab_size)


def vit_dims(vit) -> VitDims:
    """From a built timm VisionTransformer (meta device is enough); OpenVLA runs blocks 0..depth-2."""
    proj = vit.patch_embed.proj
    return VitDims(embed_dim=vit.embed_dim, mlp_dim=vit.blocks[0].mlp.fc1.out_features,
                   blocks_run=len(vit.blocks) - 1, patch_size=proj.kernel_size[0], in_chans=proj.in_channels,
                   num_patches=vit.patch_embed.num_patches, prefix_tokens=vit.num_prefix_tokens)


def vla_dims(config, family: ModelFamily, variant: OpenVLAVariant) -> VlaDims:
    """Dimensions of an OpenVLA-architecture model from its `OpenVLAConfig`, building the ViTs on the meta
    device (no weights, no memory)."""
    import torch

    from vla_pruner.models.openvla.vision import create_vit

    with torch.device("meta"):
        vits = tuple(vit_dims(create_vit(config, i)) for i in range(len(config.timm_model_ids)))
    llm = llm_dims(config)
    vision_dim = sum(v.embed_dim for v in vits)
    projector = ((vision_dim, 4 * vision_dim), (4 * vision_dim, llm.hidden), (llm.hidden, llm.hidden))
    return VlaDims(llm=llm, vits=vits, projector=projector, family=family, variant=variant)


def local_config_dir(model_cfg: Mapping) -> Path | None:
    """A checkpoint directory of the model that is on disk: `checkpoint`, else any of `checkpoints` (one per
    suite; they share the architecture)."""
    from vla_pruner.models.checkpoint import named_checkpoints

    dirs = [Path(c).expanduser() for c in named_checkpoints(model_cfg)]
    return next((d for d in dirs if (d / "config.json").is_file()), None)


def architecture(model_cfg: Mapping, variant: OpenVLAVariant):
    """The `OpenVLAConfig` of the model a `cfg.model` node of a family of `variant` describes: a local checkpoint's config.json
    when there is one, else the family's tiny architecture (a model built from `build_seed`) or official one."""
    from vla_pruner.models.openvla.checkpoint import read_config
    from vla_pruner.models.openvla.config import OpenVLAConfig

    directory = local_config_dir(model_cfg)
    if directory is not None:
        return read_config(directory)[0]
    tiny = model_cfg.get("build_seed") is not None
    return OpenVLAConfig.from_dict(variant.tiny_config() if tiny else variant.official_config())


# ------------------------------------------------------------------------------------ the families' variant


@dataclass(frozen=True)
class OpenVLAVariant:
    """What a family of the OpenVLA architecture (openvla, openvla_oft, or one from another package) states about
    itself beyond the record every family has: the shape of its query for the cost (decode steps, LM-head rows,
    inputs beyond prompt and images), the files only its checkpoints hold, which statistics it reads, and the
    configs of its official and seeded models. It is its family record's `cost`."""

    decode_steps: int  # single-token cached LLM steps after the prefill (OpenVLA: 6 more action tokens)
    prefill_logit_rows: int  # LM-head rows computed at the end of the prefill
    extra_tokens: int  # LLM inputs beyond prompt and visual tokens (OFT: proprio, 8x7 action slots, stop token)
    part_files: tuple[str, ...]  # glob patterns of files only this family's checkpoints hold, exactly one each
    default_unnorm_key: Callable[[str], str]  # suite name -> statistics key, when model.unnorm_key is null
    select_stats: Callable[[dict, str], Any]  # the statistics the policy reads; ValueError when absent
    official_config: Callable[[], dict]  # config.json of the official checkpoints (dims without weights)
    tiny_config: Callable[[], dict]  # config.json of the seeded tiny model (`model.build_seed` set)

    def unnorm_key(self, explicit: str | None, suite: str) -> str:
        return explicit or self.default_unnorm_key(suite)

    def __call__(self, model_cfg: Mapping, family: ModelFamily) -> VlaDims:
        """The family's cost: the `VlaDims` of the model a `cfg.model` node describes, read without weights."""
        return vla_dims(architecture(model_cfg, self), family, self)


def variant_of(family: ModelFamily) -> OpenVLAVariant | None:
    """The family's OpenVLA variant, None for a family of another architecture."""
    return family.cost if isinstance(family.cost, OpenVLAVariant) else None
