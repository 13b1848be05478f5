"""Baseline visual-token pruners (FastV, SparseVLM, random) on the vla_pruner Pruner interface.

Importing this package registers every pruner (the baselines here, `vla` and `none` from vla_pruner), so
`baselines.build_pruner` knows all names.
"""
from vla_pruner import method as _vla  # noqa: F401  (registers "vla")
from vla_pruner.pruning import PRUNERS, ModelLayout, build_pruner, pruner_config

from baselines import fastv, random_keep, sparsevlm  # noqa: F401  (register "fastv", "random", "sparsevlm")

__all__ = ["PRUNERS", "ModelLayout", "build_pruner", "pruner_config"]
