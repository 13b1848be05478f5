"""VLA-Pruner library: OpenVLA / OpenVLA-OFT / pi0 models, the pruning engine and the VLA-Pruner method.

Exports are imported on first use, so importing the package (or its torch-free parts) stays cheap.
"""
from importlib import import_module

_LAZY_EXPORTS = {
    "OpenVLA": "vla_pruner.models.openvla.model",
    "OpenVLAProcessor": "vla_pruner.models.openvla.processor",
    "OpenVLAOFT": "vla_pruner.models.openvla_oft.model",
    "Pi0": "vla_pruner.models.pi0.model",
    "PruningEngine": "vla_pruner.engine",
    "QueryState": "vla_pruner.engine",
    "SequenceLayout": "vla_pruner.layout",
    "select_diverse": "vla_pruner.diversity",
    "VLAPruner": "vla_pruner.method",
    "VLAPrunerConfig": "vla_pruner.method",
    **{name: "vla_pruner.pruning" for name in (
        "PRUNERS", "MergedTokens", "ModelLayout", "PrunePlan", "Pruner", "PrunerConfig", "Selection",
        "SingleCutPruner", "Stage", "StageInputs", "budget", "build_pruner", "pruner_config", "register_pruner")},
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'vla_pruner' has no attribute {name!r}")
