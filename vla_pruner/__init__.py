"""VLA-Pruner library: OpenVLA / OpenVLA-OFT models, the pruning engine and the VLA-Pruner method."""
