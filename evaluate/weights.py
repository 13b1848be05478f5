"""A checkpoint's fingerprint, part of a run's identity: weights retrained or replaced at the same path are another
experiment, so a resumed run refuses them instead of pooling their episodes with the old ones' (and a report gives
them a row of their own)."""
from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_KEY = "weights"
FULL_HASH_MAX = 64 << 20  # files up to this size are hashed whole (the small models: well under a second)
BLOCK = 1 << 20
BLOCKS = 16  # larger files (a 7B model's shards): their size and 16 evenly spaced 1 MiB blocks


def weights_fingerprint(directory: str | Path) -> str | None:
    """16 hex digits over every file at the checkpoint directory's top level (weights, configs, statistics), by
    name, size and content; None when `directory` is not a local directory (a hub id: its name is the identity)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            if size <= FULL_HASH_MAX:
                digest.update(hashlib.sha256(f.read()).digest())
                continue
            for i in range(BLOCKS):
                f.seek((size - BLOCK) * i // (BLOCKS - 1))
                digest.update(f.read(BLOCK))
    return digest.hexdigest()[:16]


def with_weights(identity: dict, described: dict) -> dict:
    """`identity` plus the fingerprint of the checkpoint the built policy describes (`weights`), if it has one."""
    checkpoint = described.get("checkpoint")
    fingerprint = weights_fingerprint(checkpoint) if checkpoint else None
    return identity if fingerprint is None else {**identity, WEIGHTS_KEY: fingerprint}
