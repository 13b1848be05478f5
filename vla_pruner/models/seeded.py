"""Seeded (tiny) checkpoints of any family: built once into a directory, atomically, and refused when built from
another seed; each family's tiny module writes its own files through `build_atomically`."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from vla_pruner.models.checkpoint import CONFIG_FILE, CheckpointError, read_json


def tiny_checkpoint_built(directory: Path, seed: int) -> bool:
    """Whether a tiny checkpoint of `seed` is at `directory` (True) or can be built there (False). CheckpointError
    for one built from another seed or recording none (its weights are not the model the run records) and for a
    place nothing can be built into (a file, a directory of other files, an unwritable parent), before any work."""
    if (directory / CONFIG_FILE).is_file():
        built = read_json(directory / CONFIG_FILE).get("build_seed")
        if built is None:  # weights of unknown origin (trained, converted, copied): not the requested seed's either
            raise CheckpointError(f"checkpoint {directory} records no build_seed, so its weights are not known to be "
                                  f"model.build_seed={seed}'s: load it as it is with model.build_seed=null, or point "
                                  "model.checkpoint at a new or empty directory to have the tiny model built there")
        if built != seed:
            raise CheckpointError(f"checkpoint {directory} was built from build_seed {built}, not model.build_seed="
                                  f"{seed}: point model.checkpoint at another directory, or delete it to have it rebuilt")
        return True
    where = f"cannot build a tiny checkpoint (build_seed {seed}) at {directory}"
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{where}: it is a file; point model.checkpoint at a new or empty directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise CheckpointError(f"{where}: the directory holds other files and no {CONFIG_FILE}; point "
                              f"model.checkpoint at a new or empty directory")
    existing = next(p for p in directory.parents if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as e:
        raise CheckpointError(f"{where}: {existing} is not writable ({e.strerror or e}); point model.checkpoint "
                              f"elsewhere") from None
    return False


def build_atomically(directory: Path, seed: int, write: Callable[[Path], None]) -> Path:
    """`directory`, first written by `write(path)` (which creates path) if it has no config.json yet: in a temp
    dir renamed into place, so concurrent builders and interrupted builds never leave half a checkpoint."""
    if tiny_checkpoint_built(directory, seed):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(staging / "ckpt")
        try:
            os.rename(staging / "ckpt", directory)
        except OSError:  # another process finished first
            if not (directory / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
