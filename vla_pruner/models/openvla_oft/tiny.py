"""A small OpenVLA-OFT built from a seed, in the official OFT checkpoint layout: `model=openvla_oft_tiny`.

The base is the project's tiny OpenVLA (`tiny.py`, same seed, same cache mechanism); this module adds what
OFT needs beside it: a seeded proprio projector and L1 regression head of the LLM's width, saved as
`proprio_projector--0_checkpoint.pt` / `action_head--0_checkpoint.pt` with the DDP `module.` prefix the
official files carry, and the statistics the harness gives it (the benchmark's, under the keys OFT reads: the
action and proprio statistics of `{suite}_no_noops`) in `dataset_statistics.json` and config.json. Its actions are
meaningless.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vla_pruner.models.openvla_oft.action_head import L1RegressionActionHead
from vla_pruner.models.openvla_oft.model import ACTION_HEAD_FILE, PROPRIO_FILE
from vla_pruner.models.openvla_oft.proprio import ProprioProjector

STEP = 0  # the `N` of the official file names: no training steps


def build_oft_parts(width: int, seed: int) -> tuple[ProprioProjector, L1RegressionActionHead]:
    """Seeded proprio projector and action head (PyTorch's default init) for an LLM of width `width`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProprioProjector(width), L1RegressionActionHead(width)


def add_oft_parts(directory: Path, seed: int, norm_stats: dict) -> Path:
    """Turn a tiny OpenVLA checkpoint directory into an OFT one with `norm_stats` (the benchmark's action and proprio
    statistics); a no-op once done. Each file is written to a
    temporary name and renamed, the action head last, so concurrent builders and interrupted builds are safe."""
    directory = Path(directory)
    head_file = directory / f"{ACTION_HEAD_FILE}--{STEP}_checkpoint.pt"
    if head_file.is_file():
        return directory
    config = json.loads((directory / "config.json").read_text())
    stats = norm_stats
    _replace(directory / "dataset_statistics.json", lambda f: f.write_text(json.dumps(stats, indent=2)))
    config["norm_stats"] = stats
    _replace(directory / "config.json", lambda f: f.write_text(json.dumps(config, indent=2)))
    projector, head = build_oft_parts(config["text_config"]["hidden_size"], seed)
    for module, file in ((projector, directory / f"{PROPRIO_FILE}--{STEP}_checkpoint.pt"), (head, head_file)):
        state = {f"module.{k}": v for k, v in module.state_dict().items()}
        _replace(file, lambda f: torch.save(state, f))
    return directory


def _replace(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
