"""The unit and the per-layer count every FLOPs module shares (evaluate.analysis.flops for the Llama VLAs,
evaluate.analysis.pi0_flops for pi0), apart so that neither imports the other's module to get them."""
from __future__ import annotations

TERA = 1e12
UNIT = "TMACs"  # what the paper calls "FLOPs (T)"
UNIT_NOTE = "TMACs = the paper's 'FLOPs (T)'; torch FlopCounterMode FLOPs = 2 x MACs"
DEFAULT_PRUNE_LAYER = 3


def layer_macs(n: int, d: int, m: int, keys: int | None = None) -> int:
    """The paper's per-layer prefill count for n tokens, hidden d, MLP width m; `keys` (default n): the keys they
    attend to, more than n when some are reused rather than computed (VLA-Cache)."""
    return 4 * n * d * d + 2 * n * (n if keys is None else keys) * d + 3 * n * d * m
