"""Pruner classes by name: this package's own, the in-tree `baselines` package's table, and other packages' entry
points, each imported when first asked for; `register_pruner` adds one defined anywhere else."""
from __future__ import annotations

import dataclasses
from importlib import import_module
from typing import Any, Iterator, Mapping, Sequence

from vla_pruner.entry_points import load_declared, with_entry_points
from vla_pruner.pruning.base import Pruner
from vla_pruner.pruning.options import PrunerConfig
from vla_pruner.pruning.plan import ModelLayout

# this package's own pruners, imported on first use
BUILT_IN = {"none": "vla_pruner.pruning.base:NonePruner", "vla": "vla_pruner.method:VLAPruner"}
# the tables of the pruner packages this distribution ships beside the library ("module:TABLE", a dict of
# name -> "module:Class"): a row added there is found without a re-install
IN_TREE_TABLES = ("baselines:PRUNER_CLASSES",)
# other packages declare theirs as entry points of this group
ENTRY_POINT_GROUP = "vla_pruner.pruners"


class PrunerRegistry(Mapping[str, type[Pruner]]):
    """Pruner classes by name. Filled without import side effects: the built-in table, the in-tree packages' tables
    and the packages' entry points (group `vla_pruner.pruners`) name each class as "module:Class", read once when a
    name is not found otherwise and imported when first asked for; `register_pruner` adds a class defined anywhere
    else."""

    def __init__(self, declared: Mapping[str, str], group: str, tables: Sequence[str] = ()):
        self._declared = dict(declared)
        self._group = group
        self._tables = tuple(tables)
        self._all_read = False
        self._classes: dict[str, type[Pruner]] = {}

    def _read_all(self) -> None:
        if not self._all_read:
            for table in self._tables:
                module, _, attribute = table.partition(":")
                for name, target in getattr(import_module(module), attribute).items():
                    self._declared.setdefault(name, target)
            self._declared = with_entry_points(self._declared, self._group)
            self._all_read = True

    def names(self) -> list[str]:
        self._read_all()
        return sorted(set(self._declared) | set(self._classes))

    def register(self, cls: type[Pruner]) -> type[Pruner]:
        if cls.name in self.names():
            raise ValueError(f"pruner {cls.name!r} registered twice")
        self._classes[cls.name] = cls
        return cls

    def __getitem__(self, name: str) -> type[Pruner]:
        if name not in self._classes:
            if name not in self._declared:
                self._read_all()
            if name not in self._declared:
                raise KeyError(name)
            self._classes[name] = load_declared("pruner", name, self._declared[name])
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        # a declared name needs no table read: building `vla` imports nothing of the other packages
        return name in self._classes or name in self._declared or name in self.names()


PRUNERS = PrunerRegistry(BUILT_IN, ENTRY_POINT_GROUP, IN_TREE_TABLES)


def register_pruner(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: make a pruner defined outside the declared ones (say, in a test) buildable by its `name`."""
    return PRUNERS.register(cls)


def pruner_class(name: str) -> type[Pruner]:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; valid choices: {', '.join(PRUNERS)}")
    return PRUNERS[name]


def pruner_config(cfg: Mapping[str, Any] | PrunerConfig, name: str | None = None) -> PrunerConfig:
    """Typed, validated options from a plain mapping (e.g. Hydra's `pruner` group) `{name: ..., **options}`."""
    if isinstance(cfg, PrunerConfig):
        return cfg
    options = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in cfg.items()}
    name = options.pop("name", name)
    cls = pruner_class(name)
    valid = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options) - valid)
    retired = [f" ({cls.Config.RETIRED[k]})" for k in unknown if k in cls.Config.RETIRED]
    if unknown:
        raise ValueError(f"pruner {name!r} has no option(s) {', '.join(unknown)}{''.join(retired)}; "
                         f"its options: {', '.join(sorted(valid)) or 'none'}")
    return cls.Config(**options)


def build_pruner(cfg: Mapping[str, Any] | PrunerConfig, keep: float, layout: ModelLayout) -> Pruner:
    """Build a registered pruner from `{name: ..., **options}` (or a typed config) and the run's shared
    budget `keep`."""
    if isinstance(cfg, PrunerConfig):
        cls = next((c for c in PRUNERS.values() if type(cfg) is c.Config), None)
        if cls is None:
            raise ValueError(f"no registered pruner takes a {type(cfg).__name__}")
    else:
        cls = pruner_class(cfg.get("name"))
    return cls(pruner_config(cfg, cls.name), keep, layout)
