"""Baseline visual-token pruners (FastV, SparseVLM, random) on the vla_pruner Pruner interface.

They are declared as entry points (pyproject.toml, group `vla_pruner.pruners`), so `vla_pruner.build_pruner`
imports each module when its name is first asked for; importing this package registers nothing. The registry's
functions are re-exported for the harness.
"""
from vla_pruner.pruning import PRUNERS, ModelLayout, build_pruner, pruner_config

__all__ = ["PRUNERS", "ModelLayout", "build_pruner", "pruner_config"]
