"""The command line of `python -m evaluate.fidelity`: its own keys, the Hydra overrides it passes on, and every
check that needs no weights (the source's demos, each setting composed and validated as a run would be).

Own keys: `source=PATH` (a demo .hdf5 file, a directory of them, or a run directory recorded with
`record_demos=true`), `pruners=[fastv,vla,...]` (group files of configs/pruner/), `keeps=[0.5,0.25,0.125]`,
`out=DIR`, `episodes=N` (the first N demos), `frames=N` (the first N steps of each), `instruction=TEXT` or
`instruction_from_task=J` (one more setting: the dense model told TEXT, or task J's instruction, instead of each
demo's own: how far the instruction moves the actions, beside how far pruning does). The rest (`model=...`,
`model.checkpoint=...`, `device=...`, `seed=...`) go to Hydra as for `python -m evaluate`. The suite is the
demos' own (it picks the model's statistics); `pruner=`, `keep=` and `suite=` are refused, since one replay
runs many settings on one suite.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from evaluate.config import ConfigError, check_group_overrides, check_keep, group_choices

DEFAULT_PRUNERS = ("random", "fastv", "sparsevlm", "divprune", "vla")  # every model family runs these
DEFAULT_KEEPS = (0.5, 0.25, 0.125)
DENSE = "none"
REFUSED = {"pruner": "list pruners with pruners=[fastv,vla,...]", "keep": "list retentions with keeps=[0.5,0.25]",
           "suite": "the suite is the source demos' own", "policy": "the replay runs the model of `model`"}


@dataclass(frozen=True)
class Setting:
    """One pruner setting replayed beside the dense model: its group file (configs/pruner/<pruner>.yaml) and keep;
    `told` (the dense model only): what the policy is told instead of each demo's instruction."""

    pruner: str
    keep: float
    told: str | None = None

    def overrides(self) -> list[str]:
        return [f"pruner={self.pruner}", f"keep={self.keep}"]


@dataclass
class FidelityArgs:
    source: Path
    pruners: list[str] = field(default_factory=lambda: list(DEFAULT_PRUNERS))
    keeps: list[float] = field(default_factory=lambda: list(DEFAULT_KEEPS))
    out: Path | None = None
    episodes: int | None = None
    frames: int | None = None
    hydra: list[str] = field(default_factory=list)  # the overrides passed on (model=..., device=...)
    instruction: str | None = None  # the dense model told this, as one more setting
    instruction_from_task: int | None = None  # ... or the instruction of this task of the demos' suite

    def settings(self, task_instructions: list[str] | None = None) -> list[Setting]:
        """Every pruner at every keep; `none` once, at keep 1.0 (it is dense whatever keep says); the told dense model
        last (`task_instructions`: the suite's, for instruction_from_task)."""
        found = [Setting(p, 1.0) if p == DENSE else Setting(p, k) for p in self.pruners
                 for k in ([1.0] if p == DENSE else self.keeps)]
        if self.instruction_from_task is not None:
            found.append(Setting(DENSE, 1.0, told=task_instructions[self.instruction_from_task]))
        elif self.instruction is not None:
            found.append(Setting(DENSE, 1.0, told=self.instruction))
        return list(dict.fromkeys(found))


def _list(key: str, value: str) -> list[str]:
    items = [item.strip().strip("'\"") for item in value.strip().removeprefix("[").removesuffix("]").split(",")]
    if not all(items):
        raise ConfigError(f"{key}={value} lists nothing or an empty item; e.g. {key}=[a,b]")
    return items


def _positive(key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{key}={value} must be a positive integer")
    return int(value)


def _keep(value: str) -> float:
    try:
        keep = float(value)
    except ValueError:
        raise ConfigError(f"keeps: '{value}' is not a number; keeps are retentions in (0, 1]") from None
    check_keep(keep)
    return keep


def _pruner(name: str) -> str:
    choices = group_choices("pruner")
    if name not in choices:
        raise ConfigError(f"unknown pruner '{name}'; valid choices: {', '.join(choices)}")
    return name


def parse_args(argv: list[str]) -> FidelityArgs:
    """The command line as typed values; the first mistake is a ConfigError in one line."""
    own: dict = {}
    hydra = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"'{arg}' is not key=value; e.g. source=demos/ model=openvla_oft pruners=[fastv,vla]")
        bare = key.lstrip("+~").split(".")[0]
        if bare in REFUSED:
            raise ConfigError(f"{key}= is not an option here: {REFUSED[bare]}")
        if key == "source":
            own["source"] = Path(value).expanduser()
        elif key == "pruners":
            own["pruners"] = list(dict.fromkeys(_pruner(p) for p in _list(key, value)))
        elif key == "keeps":
            own["keeps"] = list(dict.fromkeys(_keep(k) for k in _list(key, value)))
        elif key == "out":
            own["out"] = Path(value).expanduser()
        elif key in ("episodes", "frames"):
            own[key] = _positive(key, value)
        elif key == "instruction":
            if not value.strip():
                raise ConfigError("instruction= is empty: give the words the dense model is told")
            own[key] = value
        elif key == "instruction_from_task":
            if not value.isdigit():
                raise ConfigError(f"instruction_from_task={value} must be a task id (0, 1, ...)")
            own[key] = int(value)
        else:
            hydra.append(arg)
    if "source" not in own:
        raise ConfigError("source= is missing: a demo .hdf5 file, a directory of them, or a run directory recorded "
                          "with record_demos=true")
    if "instruction" in own and "instruction_from_task" in own:
        raise ConfigError("instruction= and instruction_from_task=: give one of them")
    check_group_overrides(hydra)
    return FidelityArgs(**own, hydra=hydra)


def task_instructions(args: FidelityArgs, suite: str) -> list[str] | None:
    """The suite's task instructions when a setting is told one of them (checked: J must be a task of the suite)."""
    if args.instruction_from_task is None:
        return None
    from evaluate.envs.suites import suite_benchmark

    instructions = [task.instruction for task in suite_benchmark(suite).load_suite(suite)]
    if args.instruction_from_task >= len(instructions):
        raise ConfigError(f"instruction_from_task={args.instruction_from_task} is not a task of {suite}: valid task "
                          f"ids are 0..{len(instructions) - 1}")
    return instructions


def check_settings(args: FidelityArgs, suite: str, policies: dict) -> tuple[DictConfig, dict[Setting, DictConfig]]:
    """The dense config and each setting's, composed and checked exactly as `python -m evaluate` checks a run
    (model, checkpoint files, device, pruner options, pruners a model cannot run), before any weights load."""
    from evaluate.preflight import check_points

    base = [*args.hydra, f"suite={suite}"]
    settings = args.settings(task_instructions(args, suite))
    points = [[*base, *Setting(DENSE, 1.0).overrides()]] + [[*base, *s.overrides()] for s in settings]
    dense, *configs = check_points(points, policies, writable=False, what="setting")
    if dense.policy.name != "vla":
        raise ConfigError(f"policy '{dense.policy.name}' has no model to replay; fidelity replays policy=vla")
    return dense, dict(zip(settings, configs))
