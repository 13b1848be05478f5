"""VLA-Pruner library: OpenVLA / OpenVLA-OFT models, the pruning engine and the VLA-Pruner method.

`vla_pruner.OpenVLA` and `vla_pruner.OpenVLAProcessor` are imported on first use, so importing the
package (or its torch-free parts) stays cheap.
"""
from importlib import import_module

_LAZY_EXPORTS = {
    "OpenVLA": "vla_pruner.models.openvla",
    "OpenVLAProcessor": "vla_pruner.models.processor",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'vla_pruner' has no attribute {name!r}")
