"""A run's identity: the resolved settings that define its experiment (a run directory holds episodes of exactly
one), with the files the repository ships spelled portably."""
from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluate.config.schema import CONFIG_DIR

PROJECT_PATH = re.compile(r"\$\{project_path:(.+)\}")  # how `portable` spells a file the repository ships
# Fields that do not change what an episode's outcome is; a resumed run may change them.
NON_IDENTITY_FIELDS = ("tasks", "expected_tasks", "episodes_per_task", "video", "record_demos", "num_envs",
                       "worker_timeout_s", "output_root", "output_dir", "run_name", "model_choice")


def run_identity(cfg: DictConfig) -> dict:
    """The settings that define an experiment; a run directory holds episodes of exactly one."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return portable({k: v for k, v in resolved.items() if k not in NON_IDENTITY_FIELDS})


def portable(value: Any) -> Any:
    """`value` with paths to files this repository ships spelled as the configs spell them (${project_path:...}):
    the shipped policy is the same experiment from a moved clone or another one (its weights' fingerprint still
    tells retrained weights apart). Identities recorded with this clone's absolute paths read the same."""
    root = f"{CONFIG_DIR.parent}/"
    return _map_strings(value, lambda s: "${project_path:%s}" % s[len(root):] if s.startswith(root) else s)


def local(value: Any) -> Any:
    """The inverse of `portable`: a recorded identity's shipped files as this clone's paths (to read them)."""
    return _map_strings(value, lambda s: str(CONFIG_DIR.parent / m[1]) if (m := PROJECT_PATH.fullmatch(s)) else s)


def _map_strings(value: Any, change) -> Any:
    """`value` (a resolved config or identity: dicts, lists, scalars) with `change` applied to every string in it."""
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    return change(value) if isinstance(value, str) else value
