"""A pruner's typed options: the base config that type-checks every option given on the command line, the options
of every dropping pruner (`dense_warmup`) and the one range check of a cut K."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence


def check_choice(option: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


DEFAULT_PRUNE_LAYER = 3  # K, the shared cut: every pruner's default, and every model family's unless its record says


def check_prune_layer(prune_layer: int, num_layers: int, lowest: int = 1, why: str = "",
                      option: str = "prune_layer=") -> None:
    """The one range check of a cut K: it must leave a scoring layer (K-1 >= 0; `lowest`=0 for a cut before the
    model) and at least one layer after pruning (K < L). `why` explains a non-default range; `option` is how the
    caller's user spells the setting."""
    if not lowest <= prune_layer < num_layers:
        raise ValueError(f"{option}{prune_layer} must be in {lowest}..{num_layers - 1} "
                         f"for a model with {num_layers} layers{why}")


def matches_type(value: Any, hint: Any) -> bool:
    """Whether an option value fits its annotation: int (not bool), float (int or float, not bool), bool, str,
    `tuple[T, ...]` and unions of these. Config values come from the command line, so they are checked."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, tuple) and all(matches_type(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {type_name(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, hint.__name__)


@dataclass(frozen=True)
class PrunerConfig:
    """Base of the typed per-pruner options: every field must fit its annotation (`prune_layer=2.5` is refused
    here, not at the first query); subclasses check ranges and choices in __post_init__ after super()'s.
    `RETIRED` names options a pruner no longer has, with what replaced them (said when one is given)."""

    RETIRED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        # the pruner's own options first: a shared option may follow one of them (VLA-Pruner's dense_warmup = window)
        for f in sorted(dataclasses.fields(self), key=lambda f: f.name in SHARED_OPTIONS):
            value = getattr(self, f.name)
            if not matches_type(value, hints[f.name]):
                raise ValueError(f"{f.name}={value!r} must be {type_name(hints[f.name])}")


SHARED_OPTIONS = ("dense_warmup",)  # DroppingConfig's


@dataclass(frozen=True)
class DroppingConfig(PrunerConfig):
    """Options of every pruner that drops tokens. `dense_warmup=N`: the first N queries of each episode run
    unpruned (recorded `warmup: true`), so two methods can be compared with the same dense start; 0 for every
    method but VLA-Pruner, whose action history fills on dense queries in the paper."""

    dense_warmup: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.dense_warmup < 0:
            raise ValueError(f"dense_warmup={self.dense_warmup} must be 0 or more (queries per episode run dense)")
