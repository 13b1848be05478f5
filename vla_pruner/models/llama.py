"""The Llama-2 language model of OpenVLA, as a plain loop over transformers' decoder layers.

The loop is ours (not `LlamaForCausalLM.forward`) so that the pruning engine can run layers 0..K-1 on all
tokens, gather the kept tokens, and run K..L-1 on them with their original position ids: `run_layers`
takes a layer range, explicit position ids and a cache whose layers may hold different token counts.
Parameter names follow transformers' `LlamaForCausalLM` (`model.layers.N...`, `lm_head`) so official
checkpoints load as they are.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn
from transformers import AttentionInterface, LlamaConfig
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

# (queries [B, heads, T, head_dim], keys [B, heads, N, head_dim], scaling): one layer's rotated queries of the rows
# it runs and all its keys (cache included, key/value heads repeated to the query heads), as its attention uses them
Probe = Callable[[torch.Tensor, torch.Tensor, float], None]
PROBING_SDPA = "vla_pruner_sdpa"


def probing_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, probe: Probe | None = None, **kwargs):
    """transformers' SDPA attention, after showing `probe` (if given) the queries and keys it attends with: an
    attention probe costs the probed rows' scores only, no second layer norm or q projection, and the layer's
    output is SDPA's, bit for bit, probed or not."""
    if probe is not None:
        probe(query, repeat_kv(key, module.num_key_value_groups), module.scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PROBING_SDPA, probing_sdpa)


class KVCache:
    """Keys and values per layer, grown by concatenation along the sequence axis.

    Each layer is independent, so layers after a pruning point can hold fewer tokens than earlier ones.
    `update` is the method transformers' attention calls: it appends and returns the full keys/values.
    """

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.keys[layer_idx] is not None:
            key = torch.cat([self.keys[layer_idx], key], dim=-2)
            value = torch.cat([self.values[layer_idx], value], dim=-2)
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value

    def length(self, layer_idx: int) -> int:
        k = self.keys[layer_idx]
        return 0 if k is None else k.shape[-2]

    def subset(self, indices: list[int]) -> "KVCache":
        """The cache of these batch samples."""
        cache = type(self).__new__(type(self))
        cache.__dict__.update(self.__dict__)
        cache.keys = [None if k is None else k[indices] for k in self.keys]
        cache.values = [None if v is None else v[indices] for v in self.values]
        return cache


class ReuseCache(KVCache):
    """A prefill cache over a sequence of `length` positions whose layers may run only some of them (VLA-Cache):
    a layer that runs n < length rows writes their keys/values over `base` (the previous query's, at every
    position) at the rows' positions `rows` [B, n], and attends to all `length` keys in position order. Decode
    steps append as in `KVCache`."""

    def __init__(self, num_layers: int, length: int):
        super().__init__(num_layers)
        self.length_full = length
        self.base: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # per layer [B, kv_heads, S, hd]
        self.rows: torch.Tensor | None = None  # [B, n] positions of the rows the running layers compute

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.keys[layer_idx] is None and key.shape[-2] < self.length_full:
            index = self.rows[:, None, :, None].expand(-1, key.shape[1], -1, key.shape[-1])
            key = self.base[0][layer_idx].scatter(2, index, key)
            value = self.base[1][layer_idx].scatter(2, index, value)
        return super().update(key, value, layer_idx)

    def subset(self, indices: list[int]) -> "ReuseCache":
        cache = super().subset(indices)
        if self.base is not None:
            cache.base = tuple([t[indices] for t in part] for part in self.base)
        return cache


class _LlamaBody(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class LlamaLM(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        config._attn_implementation = PROBING_SDPA  # SDPA that can show its queries and keys to a probe
        self.config = config
        self.model = _LlamaBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary_emb = LlamaRotaryEmbedding(config)  # buffers only, no stored weights

    def rebuild_rotary(self, device: torch.device) -> None:
        """Recompute the RoPE frequencies (float32) on `device`: they are derived, never stored in checkpoints."""
        self.rotary_emb = LlamaRotaryEmbedding(self.config).to(device)

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def run_layers(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        start: int = 0,
        stop: int | None = None,
        probes: Mapping[int, Probe] | None = None,
    ) -> torch.Tensor:
        """Run decoder layers `start..stop-1` on `hidden` [B, T, H] at `position_ids` [B, T] (SDPA attention).

        `attention_mask` None means causal over what the cache holds plus these tokens (valid for a prefill
        into an empty cache and for single-token decode steps); otherwise a boolean [B, 1, T, keys] mask,
        True = attend. `probes[l]` is shown layer l's queries and keys inside its attention (`Probe`), after
        the cache took these tokens' keys (the pruning engine's attention probes).
        """
        probes = probes or {}
        if probes and self.config._attn_implementation != PROBING_SDPA:
            raise RuntimeError(f"attention probes need attn_implementation {PROBING_SDPA!r}, this model runs "
                               f"{self.config._attn_implementation!r}")
        position_embeddings = self.rotary_emb(hidden, position_ids)
        stop = len(self.layers) if stop is None else stop
        for index in range(start, stop):
            probe = {"probe": probes[index]} if index in probes else {}
            hidden = self.layers[index](
                hidden,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                position_embeddings=position_embeddings,
                **probe,
            )
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(hidden))


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, S] 0/1 padding mask -> [B, 1, S, S] boolean causal mask that also hides padded keys.

    Rows that would see no key at all (queries at left padding) see themselves, so SDPA stays finite;
    their outputs are padding and are never read.
    """
    S = attention_mask.shape[-1]
    causal = torch.ones(S, S, dtype=torch.bool, device=attention_mask.device).tril()
    mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
    eye = torch.eye(S, dtype=torch.bool, device=attention_mask.device)[None, None]
    return mask | (eye & ~mask.any(-1, keepdim=True))


def bidirectional_mask(length: int, device: torch.device) -> torch.Tensor:
    """Every query sees every key (boolean [1, 1, S, S]): SDPA without its causal default."""
    return torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
