"""OpenVLA-OFT's L1 regression action head: final hidden states of the action slots -> a normalised chunk.

Parameter names follow the official `L1RegressionActionHead` (`model.layer_norm1`, `model.fc1`,
`model.mlp_resnet_blocks.N.ffn.{0,1}`, `model.layer_norm2`, `model.fc2`) so its `action_head--N_checkpoint.pt`
loads as it is once the DDP `module.` prefix is stripped. Widths follow the LLM (hidden d): the 7 slots of
one action step are read as one vector of 7*d.
"""
from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    def __init__(self, llm_dim: int, action_dim: int = 7, chunk: int = 8, num_blocks: int = 2):
        super().__init__()
        self.action_dim, self.chunk = action_dim, chunk
        self.model = MLPResNet(num_blocks, llm_dim * action_dim, llm_dim, action_dim)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """[B, chunk*action_dim, d] final-norm hidden states -> [B, chunk, action_dim] normalised actions."""
        return self.model(slots.reshape(slots.shape[0], self.chunk, -1))
