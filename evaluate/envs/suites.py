"""Every suite the harness knows, in one table: the sweep's grid and task counts (scripts/sweep.py), the tables'
paper columns (analysis/labels.py), the tiny model's vocabulary (policies/vla_model.py) and which suite family
runs a suite (evaluate/runner.py) read it here. configs/suite/<option>.yaml (name, max_steps) are the Hydra
side of the same rows; a test keeps the two in step.

Importing this module loads no simulator: a family's module is imported when one of its suites runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from evaluate.config import ConfigError
from evaluate.envs.base import SuiteFamily


@dataclass(frozen=True)
class Suite:
    name: str  # the benchmark's own name, = `name` in configs/suite/<name>.yaml
    family: str  # key of FAMILIES
    tasks: int
    column: str  # the paper's column name in tables
    paper_option: str | None = None  # the configs/suite option named as in the paper, when not `name`
    in_paper: bool = True  # a suite of the paper's Table 1 (the sweep's default grid)

    @property
    def option(self) -> str:
        """How the paper's grid selects it: `suite=<option>`."""
        return self.paper_option or self.name


SUITES: tuple[Suite, ...] = (
    Suite("libero_spatial", "libero", tasks=10, column="spatial"),
    Suite("libero_object", "libero", tasks=10, column="object"),
    Suite("libero_goal", "libero", tasks=10, column="goal"),
    Suite("libero_10", "libero", tasks=10, column="long", paper_option="libero_long"),
    Suite("libero_90", "libero", tasks=90, column="libero_90", in_paper=False),
)
# suite family -> the module that implements it (its `FAMILY`, an envs.base.SuiteFamily)
FAMILIES = {"libero": "evaluate.envs.libero"}


def suite_info(name: str) -> Suite:
    """The row of a suite, by its name or its paper option (`libero_long`)."""
    for suite in SUITES:
        if name in (suite.name, suite.paper_option):
            return suite
    known = ", ".join(key for s in SUITES for key in (s.name, s.paper_option) if key)
    raise ConfigError(f"unknown suite '{name}'; valid choices: {known}")


def suite_family(name: str) -> SuiteFamily:
    """The benchmark that runs suite `name` (its module is imported here, not before)."""
    return import_module(FAMILIES[suite_info(name).family]).FAMILY


def family_suites(family: str) -> list[str]:
    return [s.name for s in SUITES if s.family == family]


def paper_columns() -> dict[str, str]:
    """Suite name (and paper option) -> the paper's column name, in the paper's column order."""
    columns = {}
    for suite in SUITES:
        columns.update({key: suite.column for key in (suite.name, suite.paper_option) if key})
    return columns
