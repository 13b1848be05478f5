"""The seeded tiny models as the harness builds them for LIBERO (its statistics, the instructions given), for tests
that build one in a directory of their own."""
from pathlib import Path
from typing import Iterable

from evaluate.envs.libero_conventions import tiny_oft_stats, tiny_openvla_stats, tiny_pi0_stats
from vla_pruner.models.openvla.tiny import ensure_tiny_checkpoint
from vla_pruner.models.openvla_oft.tiny import add_oft_parts
from vla_pruner.models.pi0.tiny import ensure_tiny_pi0


def tiny_openvla(directory: str | Path, seed: int, instructions: Iterable[str]) -> Path:
    """The tiny OpenVLA checkpoint at `directory`, built first if absent."""
    return ensure_tiny_checkpoint(directory, seed, instructions, tiny_openvla_stats())


def tiny_oft(directory: str | Path, seed: int, instructions: Iterable[str]) -> Path:
    """The tiny OFT checkpoint at `directory` (the tiny OpenVLA plus the OFT parts), built first if absent."""
    return add_oft_parts(tiny_openvla(directory, seed, instructions), seed, tiny_oft_stats())


def tiny_pi0(directory: str | Path, seed: int, instructions: Iterable[str]) -> Path:
    """The tiny pi0 at `directory`, built first if absent."""
    return ensure_tiny_pi0(directory, seed, instructions, tiny_pi0_stats())
