"""Compute cost of a VLA policy query, counted analytically from the architecture and the token counts used.

Unit everywhere: multiply-accumulates (MACs). The VLA-pruning papers print MACs as "FLOPs (T)" (OpenVLA-7B
dense prefill of ~291 tokens: 1.906 T), so `tmacs` numbers compare with their tables directly.
`torch.utils.flop_counter.FlopCounterMode` counts 2 FLOPs per MAC and counts attention as non-causal
(full n x n scores), which is also the convention here: FlopCounterMode total = 2 x `full_query_macs`.

Two counts:
- `prefill_macs`: the paper's analytic LLM-prefill count, per decoder layer with n tokens
  `4*n*d^2 + 2*n^2*d + 3*n*d*m` (four attention projections, scores + weighted sum, three MLP matrices),
  summed over a per-layer token-count list (layers 0..K-1 full, K.. kept; SparseVLM's schedule fits too).
  A KV-reusing query (VLA-Cache) has more keys than queries: its reused visual tokens are keys (carried from the
  previous query) but not queries, so layer l counts `4*n*d^2 + 2*n*k*d + 3*n*d*m` with n = the rows it
  computes and k = the keys it attends to (every position).
- `full_query_macs`: end to end, all matrix products: both ViTs (patch embedding + the blocks that run),
  the projector, the prefill (exact k/v widths for grouped-query attention), the LM-head rows computed and
  the decode steps with their real KV-cache lengths (layer l's cache holds what layer l kept in prefill).
Neither counts element-wise work (norms, activations, softmax, RoPE), embedding look-ups, pruning probes or
OpenVLA-OFT's action head and proprio projector.

CLI (no weights loaded): `python -m evaluate.flops model=openvla pruner=fastv keep=0.25 [prompt_tokens=35]`
prints the dense and pruned prefill counts; its last line is the pruned count alone, in TMACs. The pruner is
built and checked exactly as a run builds it (same options, same errors), and the per-layer token counts come
from its plan: no stages (pruner=none) = dense, one stage = one cut, progressive SparseVLM = its stage counts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from vla_pruner.families import ModelFamily

from evaluate.analysis.macs import DEFAULT_PRUNE_LAYER, TERA, UNIT, UNIT_NOTE, layer_macs, stage_schedule

VISUAL_TOKENS_PER_IMAGE = 256
# Non-visual tokens of a typical LIBERO OpenVLA prompt ([BOS] + "In: What action should the robot take to
# ...?\nOut:" + 29871): 256 + 35 = 291, the sequence length the paper's 1.906 T refers to.
DEFAULT_PROMPT_TOKENS = 35


# ------------------------------------------------------------------------------------------- dimensions


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
    llm: LlmDims
    vits: tuple[VitDims, ...]  # run once per image
    projector: tuple[tuple[int, int], ...]  # (in, out) of each Linear, applied to every visual token
    family: ModelFamily

    def sequence_length(self, prompt_tokens: int, kept_per_image: int = VISUAL_TOKENS_PER_IMAGE) -> int:
        return prompt_tokens + self.family.extra_tokens + self.family.num_images * kept_per_image


# ------------------------------------------------------------------------------------------------ counts


def prefill_macs(tokens_per_layer: Sequence[int], d: int, m: int, keys_per_layer: Sequence[int] | None = None) -> int:
    """The paper's analytic LLM-prefill count: layer l processes tokens_per_layer[l] tokens (attending to
    keys_per_layer[l] keys; default: the same tokens)."""
    keys = tokens_per_layer if keys_per_layer is None else keys_per_layer
    return sum(layer_macs(int(n), d, m, int(k)) for n, k in zip(tokens_per_layer, keys, strict=True))


def plan_schedule(pruner, dims: VlaDims, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> list[int]:
    """Per-layer prefill tokens of a query that `pruner` prunes, once its history is warm (`stage_schedule`)."""
    return stage_schedule(pruner, dims.llm.num_layers, dims.sequence_length(prompt_tokens),
                          dims.sequence_length(prompt_tokens, 0))


def pruned_schedule(dense_tokens: int, kept_tokens: int, num_layers: int,
                    prune_layer: int = DEFAULT_PRUNE_LAYER) -> list[int]:
    """Tokens per layer when layers 0..K-1 see all of them and layers K..L-1 the kept ones."""
    if not 0 <= prune_layer <= num_layers:
        raise ValueError(f"prune layer {prune_layer} outside 0..{num_layers}")
    return [dense_tokens] * prune_layer + [kept_tokens] * (num_layers - prune_layer)


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
    steps = dims.family.decode_steps if decode_steps is None else decode_steps
    head = llm.hidden * llm.vocab_size
    prefill = sum(llm_pass_macs(llm, n, k) for n, k in zip(prefill_tokens, keys))
    prefill += dims.family.prefill_logit_rows * head
    decode = sum(llm_pass_macs(llm, 1, k + i + 1) for i in range(steps) for k in keys) + steps * head
    counts = {"vision": vision_macs(dims), "prefill": prefill, "decode": decode}
    counts["total"] = sum(counts.values())
    return counts


def analytic_prefill_macs(dims: VlaDims, prefill_tokens: Sequence[int], prefill_keys: Sequence[int] | None = None) -> int:
    return prefill_macs(prefill_tokens, dims.llm.hidden, dims.llm.intermediate, prefill_keys)


def kept_per_image(keep: float) -> int:
    """round(keep * 256), half up: the shared budget every pruner uses (vla_pruner.pruning.budget)."""
    from vla_pruner.pruning import budget

    return budget(keep, VISUAL_TOKENS_PER_IMAGE)


def query_schedule(dims: VlaDims, keep: float, prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
                   prune_layer: int = DEFAULT_PRUNE_LAYER) -> list[int]:
    """Per-layer prefill tokens of a query with one cut before layer K at retention `keep`."""
    dense = dims.sequence_length(prompt_tokens)
    kept = dims.sequence_length(prompt_tokens, kept_per_image(keep))
    return pruned_schedule(dense, kept, dims.llm.num_layers, prune_layer)


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


def vla_dims(config, family: ModelFamily) -> VlaDims:
    """Dimensions of an OpenVLA-architecture model from its `OpenVLAConfig`, building the ViTs on the meta
    device (no weights, no memory)."""
    import torch

    from vla_pruner.models.vision import create_vit

    with torch.device("meta"):
        vits = tuple(vit_dims(create_vit(config, i)) for i in range(len(config.timm_model_ids)))
    llm = llm_dims(config)
    vision_dim = sum(v.embed_dim for v in vits)
    projector = ((vision_dim, 4 * vision_dim), (4 * vision_dim, llm.hidden), (llm.hidden, llm.hidden))
    return VlaDims(llm=llm, vits=vits, projector=projector, family=family)


def model_family(model_cfg: Mapping) -> ModelFamily:
    """The record of the model's `family` (configs/model/*.yaml)."""
    from evaluate.config import ConfigError
    from vla_pruner.families import family_names, model_family as family_record

    family = model_cfg.get("family")
    if family not in family_names():
        raise ConfigError(f"model '{model_cfg.get('name')}' has family {family!r}; known: {', '.join(family_names())}")
    return family_record(family)


def model_layout(num_layers: int, family: ModelFamily):
    """What a pruner may know of a model of this depth and family (`ModelLayout`), as the policies build it."""
    from vla_pruner.pruning import ModelLayout

    return ModelLayout(num_layers=num_layers, image_tokens=family.image_tokens())


def local_config_dir(model_cfg: Mapping) -> Path | None:
    """A checkpoint directory of the model that is on disk: `checkpoint`, else any of `checkpoints` (one per
    suite; they share the architecture)."""
    candidates = [model_cfg.get("checkpoint"), *(model_cfg.get("checkpoints") or {}).values()]
    dirs = [Path(str(c)).expanduser() for c in candidates if c]
    return next((d for d in dirs if (d / "config.json").is_file()), None)


def model_dims(model_cfg: Mapping) -> VlaDims:
    """Dims of the model a `cfg.model` node describes, without loading weights: a local checkpoint's
    config.json when there is one, else the architecture registered for `model.name`. Cached per node."""
    key = json.dumps(model_cfg, sort_keys=True, default=str)
    if key not in _DIMS_CACHE:
        _DIMS_CACHE[key] = _model_dims(model_cfg)
    return _DIMS_CACHE[key]


_DIMS_CACHE: dict[str, VlaDims] = {}


def _model_dims(model_cfg: Mapping) -> VlaDims:
    if model_cfg.get("family") == "pi0":  # a prefix + an action expert: its own sizes (evaluate.analysis.pi0_flops)
        from evaluate.analysis.pi0_flops import pi0_architecture

        return pi0_architecture(model_cfg)
    return vla_dims(architecture(model_cfg), model_family(model_cfg))


def architecture(model_cfg: Mapping):
    """The `OpenVLAConfig` of the model a `cfg.model` node describes: a local checkpoint's config.json when there
    is one, else its family's tiny architecture (a model built from `build_seed`) or official one."""
    from vla_pruner.models.checkpoint import read_config
    from vla_pruner.models.config import OpenVLAConfig

    directory = local_config_dir(model_cfg)
    if directory is not None:
        return read_config(directory)[0]
    family = model_family(model_cfg)
    tiny = model_cfg.get("build_seed") is not None
    return OpenVLAConfig.from_dict(family.tiny_config() if tiny else family.official_config())


# ------------------------------------------------------------------------------------------------- CLI


def compose_config(overrides: list[str]):
    """The project's configs/config.yaml composed with Hydra overrides, plus this CLI's own keys; a bad override
    is a ConfigError in one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from evaluate.config import CONFIG_DIR, ConfigError, check_group_overrides, hydra_error_line

    check_group_overrides(overrides)
    own = {"prompt_tokens": DEFAULT_PROMPT_TOKENS}
    rest = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key in own:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{key}={value} must be a positive integer (non-visual prompt tokens)")
            own[key] = int(value)
        else:
            rest.append(arg)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=rest)
    except HydraException as e:  # an unknown key or a value of the wrong type
        raise ConfigError(hydra_error_line(e)) from None
    return OmegaConf.to_container(cfg, resolve=True), own


def report_lines(model_cfg: Mapping, pruner_cfg: Mapping, keep: float, prompt_tokens: int) -> list[str]:
    """The CLI's report; the pruner is built and checked as a run builds it (ConfigError for bad options)."""
    from evaluate.config import build_checked_pruner, check_keep

    check_keep(keep)
    if model_cfg.get("family") == "pi0":  # a prefix + an action expert: its own count
        from evaluate.analysis.pi0_flops import pi0_report_lines

        return pi0_report_lines(model_cfg, pruner_cfg, keep)
    dims = model_dims(model_cfg)
    llm = dims.llm
    pruner = build_checked_pruner(pruner_cfg, keep, model_layout(llm.num_layers, model_family(model_cfg)))
    dense = [dims.sequence_length(prompt_tokens)] * llm.num_layers
    pruned, keys = plan_schedule(pruner, dims, prompt_tokens), plan_keys(pruner, dims, prompt_tokens)
    if keys:  # VLA-Cache: the most reuse its configured rules allow, from the first reuse layer (a query can reach it)
        cuts = (f"the most reuse its rules allow (budget={pruner.config.budget}), reused keys from layer "
                f"{pruner.plan.stages[0].layer + 1}: {pruned[-1]} of {keys[0]} tokens are queries, all {keys[0]} are keys")
    else:
        cuts = "; ".join(f"cut before layer K={s.layer + 1}, {pruned[s.layer + 1]} tokens from there"
                         for s in pruner.plan.stages) or "no cut: it keeps every token"
    to_t = lambda macs: format(macs / TERA, ".6g")  # noqa: E731
    pruned_tmacs = to_t(analytic_prefill_macs(dims, pruned, keys))
    return [
        f"model {model_cfg['name']}: LLM d={llm.hidden} m={llm.intermediate} L={llm.num_layers}, "
        f"{dims.family.num_images} image(s) x {VISUAL_TOKENS_PER_IMAGE} visual tokens, prompt {prompt_tokens} tokens",
        f"unit: {UNIT_NOTE}",
        f"dense  prefill ({dense[0]} tokens): {to_t(analytic_prefill_macs(dims, dense))} {UNIT}",
        f"pruned prefill (pruner={pruner.name}, keep={keep}, {cuts}): {pruned_tmacs} {UNIT}",
        f"full query, dense / pruned (vision + projector + prefill + decode): "
        f"{to_t(full_query_macs(dims, dense)['total'])} / "
        f"{to_t(full_query_macs(dims, pruned, prefill_keys=keys)['total'])} {UNIT}",
        pruned_tmacs,
    ]


def main(argv: list[str]) -> None:
    from evaluate.config import ConfigError
    from vla_pruner.models.checkpoint import CheckpointError

    try:
        cfg, own = compose_config(argv)
        lines = report_lines(cfg["model"], cfg["pruner"], float(cfg["keep"]), own["prompt_tokens"])
    except (ConfigError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(lines))

