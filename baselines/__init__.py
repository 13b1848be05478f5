"""Baseline visual-token pruners (FastV, SparseVLM, random) on the vla_pruner Pruner interface."""
