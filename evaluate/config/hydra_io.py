"""Hydra's side of the harness: the config repository (configs/ and the search paths installed plugins add), the
options of a config group, the refusal of an unknown group option before Hydra sees it, and Hydra's multi-line
messages as one line."""
from __future__ import annotations

import copy
from functools import lru_cache
from itertools import takewhile

from evaluate.config.schema import CONFIG_DIR
from evaluate.errors import ConfigError


@lru_cache(maxsize=1)
def _config_repository():
    """Hydra's view of configs/ plus the search paths installed plugins add (built once: plugin discovery scans)."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path

    return ConfigRepository(create_config_search_path(str(CONFIG_DIR)))


@lru_cache(maxsize=None)
def group_choices(group: str) -> list[str]:
    """The options of config group `group` on Hydra's search path: configs/<group>/*.yaml and those an installed
    package adds with a search-path plugin (an out-of-tree model family's YAML)."""
    return sorted(set(_config_repository().get_group_options(group)))


def check_group_overrides(args: list[str], refused: dict[str, dict[str, str]] | None = None) -> None:
    """Catch `suite=typo` before Hydra does, to answer in one line with the valid choices; an option that
    `refused[group]` names (one that cannot run, e.g. a suite whose files the simulator package lacks) is
    refused with its reason."""
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in groups:
            choices = group_choices(key)
            for option in value.split(","):  # a multirun sweep lists several
                if option in (refused or {}).get(key, {}):
                    raise ConfigError(f"{key} '{option}' cannot run: {refused[key][option]}")
                if option not in choices:
                    raise ConfigError(f"unknown {key} '{option}'; valid choices: {', '.join(choices)}")


def hydra_error_line(error: Exception) -> str:
    """Hydra's (and OmegaConf's) multi-line message for a bad override as one line: what failed and why (its
    cause's first line: the key and the type or struct that refused it), without the hints and search paths."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    head = lines[0].rstrip(".")
    cause = str(error.__cause__ or "").strip()
    if cause:
        return f"{head}: {cause.splitlines()[0]}"
    rest = takewhile(lambda line: not line.startswith("Config search path"), lines[1:])
    return "; ".join([head, *rest]).replace(":;", ":")


# ------------------------------------------------------------------------------------------ one composition

COMPOSITIONS: list[tuple[str | None, tuple[str, ...]]] = []  # what this process composed (the tests count them)
_COMPOSED: dict[tuple, dict] = {}


def compose_each_point_once() -> None:
    """From now on this process composes a configuration once per command line of overrides: the command's check
    before anything runs (evaluate.preflight), the model choice, and Hydra's start of the run (which composes twice,
    once to read `hydra.mode`, then with `hydra.mode` set) all read the same composition: a copy each, with the job
    name and `hydra.mode` Hydra gives it. Composition is deterministic for the same overrides, so no config changes;
    a composition for a run (validating its overrides) is never served by one made for a sweep."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.utils import JobRuntime
    from omegaconf import open_dict

    if getattr(ConfigLoaderImpl.load_configuration, "composes_once", False):
        return
    load = ConfigLoaderImpl.load_configuration

    def load_once(self, config_name, overrides, run_mode, from_shell=True, validate_sweep_overrides=True):
        mode = [o for o in overrides if o.startswith("hydra.mode=")]
        rest = [o for o in overrides if not o.startswith("hydra.mode=")]
        made = _COMPOSED.setdefault((config_name, tuple(rest)), {})  # by (run mode, overrides validated)
        key = (run_mode, validate_sweep_overrides)
        if key not in made and not validate_sweep_overrides and made:  # Hydra's probe of hydra.mode: any will do
            key = next(iter(made))
        if key not in made:
            made[key] = (load(self, config_name, rest, run_mode, from_shell, validate_sweep_overrides),
                         JobRuntime().get("name"))
            COMPOSITIONS.append((config_name, tuple(rest)))
        composed, job_name = made[key]
        cfg = copy.deepcopy(composed)
        with open_dict(cfg.hydra):
            if cfg.hydra.job.name == job_name:  # the name Hydra gave the job then, not one the config sets
                cfg.hydra.job.name = JobRuntime().get("name")
            for override in mode:  # as Hydra applies it: the hydra node's value, listed among the hydra overrides
                cfg.hydra.mode = override.partition("=")[2]
                cfg.hydra.overrides.hydra.append(override)
        return cfg

    load_once.composes_once = True
    ConfigLoaderImpl.load_configuration = load_once
