"""The shared visual-token budget every pruner keeps, and the reproducible top-k they rank with."""
from __future__ import annotations

import math

import torch


def budget(keep: float, num_tokens: int) -> int:
    """Visual tokens an image keeps: round(keep * M), half rounded up. Shared by every pruner so that all
    methods compare at identical token counts."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep={keep!r} must be in (0, 1]")
    k = min(num_tokens, math.floor(keep * num_tokens + 0.5))
    if k < 1:
        raise ValueError(f"keep={keep!r} keeps no token of an image with {num_tokens} visual tokens")
    return k


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, ties broken towards the lower index (torch.topk does not promise
    an order among ties; runs must be reproducible)."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]
