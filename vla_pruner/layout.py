"""Where things are in a model's prefill sequence (`SequenceLayout`) and which rows a layer runs on (`TokenSet`).

Models describe their sequences with these and the pruning engine reads them, so neither the models nor the
pruners import the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SequenceLayout:
    """Where things are in the ORIGINAL prefill sequence."""

    length: int  # S, prefill tokens
    visual: tuple[slice, ...]  # per image, its visual tokens
    text: slice  # SparseVLM's "text" rows: prompt tokens after the visual block, up to and including 29871
    last_prompt: int  # the query row that emits action token 1 (FastV's "last" row)
    action_queries: slice  # prefill rows whose attention is the action score (decode rows come on top)
    prompt_end: int  # rows before this are BOS, visual and text: the "prefill" semantic rows
    causal: bool = True
    decodes: bool = False  # the last row's greedy token starts a cached decode (OpenVLA); else a readout (OFT)

    @classmethod
    def openvla(cls, length: int, num_visual: int = 256) -> "SequenceLayout":
        """[BOS, visual, prompt..., 29871]: the last row emits action token 1, decode steps the rest."""
        return cls(length, (slice(1, 1 + num_visual),), slice(1 + num_visual, length), length - 1,
                   slice(length - 1, length), prompt_end=length, decodes=True)


@dataclass
class TokenSet:
    """The rows a layer runs on: each row's RoPE position, image id (-1: not visual), merged flag."""

    position: torch.Tensor  # [n] long: original sequence index (merged rows: their origin's)
    image: torch.Tensor  # [n] long
    merged: torch.Tensor  # [n] bool

    @classmethod
    def full(cls, layout: SequenceLayout, device: torch.device) -> "TokenSet":
        position = torch.arange(layout.length, device=device)
        image = torch.full_like(position, -1)
        for i, s in enumerate(layout.visual):
            image[s] = i
        return cls(position, image, torch.zeros_like(position, dtype=torch.bool))

    def __len__(self) -> int:
        return len(self.position)

    def visual_rows(self, i: int) -> torch.Tensor:
        return torch.nonzero(self.image == i).flatten()

    def original_visual_rows(self, i: int) -> torch.Tensor:
        """Rows of image i's original (non-merged) visual tokens."""
        return torch.nonzero((self.image == i) & ~self.merged).flatten()

    def select(self, rows: torch.Tensor) -> "TokenSet":
        return TokenSet(self.position[rows], self.image[rows], self.merged[rows])

    def insert(self, at: int, positions: torch.Tensor, image: int) -> "TokenSet":
        """The same set with merged rows of `image` at `positions` inserted before row `at`."""
        new = TokenSet(positions, torch.full_like(positions, image), torch.ones_like(positions, dtype=torch.bool))
        return TokenSet(*(torch.cat([old[:at], add, old[at:]])
                          for old, add in zip((self.position, self.image, self.merged),
                                              (new.position, new.image, new.merged))))

    def rows_at(self, positions: torch.Tensor) -> torch.Tensor:
        """Rows of original (non-merged) tokens at these sequence positions, in row order."""
        return torch.nonzero(torch.isin(self.position, positions) & ~self.merged).flatten()

    def rows_in(self, span: slice) -> torch.Tensor:
        """Rows of original tokens whose sequence positions lie in `span`."""
        return self.rows_at(torch.arange(span.start, span.stop, device=self.position.device))
