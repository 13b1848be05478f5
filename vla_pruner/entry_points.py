"""Objects named "module:ATTRIBUTE" by this package's tables and by installed packages' entry points: the pruner
registry (vla_pruner/pruning.py) and the model families (vla_pruner/families.py) read both through here, so a
declared object is imported only when asked for and is checked to carry the name it is declared under."""
from __future__ import annotations

from importlib import import_module, metadata
from typing import Any, Mapping


def with_entry_points(declared: Mapping[str, str], group: str) -> dict[str, str]:
    """name -> "module:ATTRIBUTE": `declared` first, then what installed packages declare in entry-point `group`."""
    table = dict(declared)
    for entry in metadata.entry_points(group=group):
        table.setdefault(entry.name, entry.value)
    return table


def load_declared(kind: str, name: str, target: str) -> Any:
    """The object `target` ("module:ATTRIBUTE") names, which must carry `.name == name`; ValueError otherwise."""
    module, _, attribute = target.partition(":")
    obj = getattr(import_module(module), attribute)
    if obj.name != name:
        raise ValueError(f"{kind} {name!r} is declared as {target}, whose name is {obj.name!r}")
    return obj
