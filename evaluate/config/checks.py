"""The checks Hydra cannot express: every bad value fails before any simulator or model is built, in one line that
names the value and the valid choices; and the run's task selection."""
from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluate.config.resolvers import _plain, group_file
from evaluate.config.schema import (
    CONFIG_DIR, DEVICE_PATTERN, SAMPLED_EPISODES_MAX, EvalConfig, PolicyConfig, SuiteConfig,
)
from evaluate.envs.suites import suite_info
from evaluate.errors import ConfigError
from evaluate.instructions import check_instruction


def validate(cfg: DictConfig, policies: dict) -> None:
    """Everything a run needs that can be checked without loading weights or building an environment: the
    values here, then the check in the policy's row of `policies` (evaluate.policies.POLICIES; for `vla`: model,
    checkpoint files, device, pruner)."""
    if cfg.policy.name not in policies:
        raise ConfigError(f"unknown policy '{cfg.policy.name}'; valid choices: {', '.join(sorted(policies))}")
    check_known_keys(cfg)
    for key in ("output_root", "output_dir"):
        if not str(cfg[key]).strip():
            raise ConfigError(f"{key} is empty: it would put run directories at the filesystem root or in the "
                              f"current directory; give a directory, e.g. {key}=runs")
    check_keep(cfg.keep)
    check_action_noise(cfg.policy, policies[cfg.policy.name])
    check_instruction(cfg, policies[cfg.policy.name].uses_model, suite_info(cfg.suite.name).tasks)
    if not policies[cfg.policy.name].uses_model:
        check_unused_settings(cfg)
    if cfg.placement_seed is not None and not 0 <= cfg.placement_seed < 2**32 - SAMPLED_EPISODES_MAX:
        raise ConfigError(f"placement_seed={cfg.placement_seed} must be in 0..{2**32 - SAMPLED_EPISODES_MAX - 1} "
                          "(episode i seeds LIBERO's placement sampler with placement_seed + i), or null")
    init_states = suite_info(cfg.suite.name).init_states
    if cfg.placement_seed is None and not 1 <= cfg.episodes_per_task <= init_states:
        raise ConfigError(f"episodes_per_task={cfg.episodes_per_task} must be in 1..{init_states} "
                          f"(one of {cfg.suite.name}'s {init_states} init states per episode)")
    if cfg.placement_seed is not None and not 1 <= cfg.episodes_per_task <= SAMPLED_EPISODES_MAX:
        raise ConfigError(f"episodes_per_task={cfg.episodes_per_task} must be in 1..{SAMPLED_EPISODES_MAX} "
                          f"(placements drawn from seeds placement_seed + 0..N-1)")
    if cfg.suite.max_steps < 1:
        raise ConfigError(f"suite.max_steps={cfg.suite.max_steps} must be at least 1")
    if not DEVICE_PATTERN.match(cfg.device):
        raise ConfigError(f"device '{cfg.device}' is not one of: auto, cpu, cuda, cuda:N, mps")
    if cfg.tasks is not None and len(cfg.tasks) == 0:
        raise ConfigError("tasks=[] selects no task; list task ids, e.g. tasks=[0,3], or tasks=null for all")
    if cfg.num_envs < 1:
        raise ConfigError(f"num_envs={cfg.num_envs} must be at least 1 (simulator worker processes; 1 = none)")
    if not cfg.worker_timeout_s > 0:
        raise ConfigError(f"worker_timeout_s={cfg.worker_timeout_s} must be positive (seconds a simulator worker "
                          "may stay silent before its episode is recorded as env_error)")
    check = policies[cfg.policy.name].check
    if check is not None:
        check(cfg)


def check_action_noise(policy: DictConfig, entry) -> None:
    noise = policy.action_noise
    if noise and not entry.takes_action_noise:
        raise ConfigError(f"policy.action_noise={noise}: policy={policy.name} executes its actions as they are; "
                          "only policy=scripted perturbs them (leave it at 0.0)")
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"policy.action_noise={noise} must be in 0..1 (std of the noise on actions in [-1, 1])")


def check_known_keys(cfg: DictConfig) -> None:
    """A `+key` the schema does not have (top level, suite, policy) means nothing to a run: refuse it rather than
    record it in the run's identity. Model and pruner fields are checked against their own family's and pruner's."""
    names = lambda schema: {f.name for f in fields(schema)}  # noqa: E731
    extra = [k for k in cfg if k not in names(EvalConfig) | {"hydra"}]
    extra += [f"{group}.{k}" for group, schema in (("suite", SuiteConfig), ("policy", PolicyConfig))
              for k in cfg[group] if k not in names(OmegaConf.get_type(cfg[group]) or schema)]  # its own schema's
    if extra:
        raise ConfigError(f"unknown config key '{extra[0]}'; known: {', '.join(sorted(names(EvalConfig)))} "
                          f"(docs/configuration.md)")


def check_unused_settings(cfg: DictConfig) -> None:
    """A policy without a model (scripted, noop) runs the same whatever `model`, `pruner` and `keep` say: a changed
    one would only name another run directory and another Table 1 row for the same episodes, so it is refused."""
    defaults = default_settings()
    changed = []
    for group in ("model", "pruner"):
        values = OmegaConf.to_container(cfg[group], resolve=True)
        if values.get("name") != defaults[group].get("name"):
            changed.append(f"{group}={values.get('name')}")
        else:
            changed += [f"{group}.{k}={_plain(v)}" for k, v in values.items() if defaults[group].get(k, _ABSENT) != v]
    if cfg.keep != defaults["keep"]:
        changed.append(f"keep={cfg.keep}")
    if changed:
        raise ConfigError(f"policy={cfg.policy.name} runs no model and no pruner, so {', '.join(changed)} would "
                          f"mean nothing; leave model, pruner and keep at their defaults")


_ABSENT = object()


def default_settings() -> dict[str, Any]:
    """The model and pruner configs/config.yaml selects by default (resolved) and the default keep."""
    chosen = {}
    for entry in group_file(CONFIG_DIR / "config.yaml").defaults:
        if isinstance(entry, DictConfig):
            chosen.update({k: v for k, v in entry.items() if k in ("model", "pruner")})
    groups = OmegaConf.create({g: group_file(CONFIG_DIR / g / f"{o}.yaml") for g, o in chosen.items()})
    return {**OmegaConf.to_container(groups, resolve=True), "keep": EvalConfig.keep}


def check_keep(keep: float) -> None:
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"keep={keep} is outside (0, 1]: it is the fraction of visual tokens kept")


def check_device_available(device: str) -> None:
    """`cuda`, `cuda:N` and `mps` must exist on this machine (`auto` falls back to the CPU by itself)."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else f", and this torch {torch.__version__} is built without CUDA"
            raise ConfigError(f"device={device}: no CUDA GPU is visible here{build}; use device=cpu or device=auto")
        if index and int(index) >= count:
            raise ConfigError(f"device={device}: this machine has {count} CUDA GPU(s); valid: cuda:0..cuda:{count - 1}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps: MPS is not available here; use device=cpu or device=auto")


def build_checked_pruner(pruner: DictConfig | dict, keep: float, layout=None):
    """The pruner a run builds (same registry, same options) for a model of `layout` (`ModelLayout`); a bad
    option, a prune layer outside the model or a `keep` that keeps no token is a ConfigError naming it.
    Without a layout (an architecture not known before loading) only the options are checked; returns None."""
    from vla_pruner.pruning import build_pruner, pruner_config

    options = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else dict(pruner)
    try:
        if layout is None:
            pruner_config(options)
            return None
        built = build_pruner(options, keep, layout)
        _CHECKED_PRUNERS[_pruner_key(options, keep, layout)] = built
        return built
    except ValueError as e:
        raise ConfigError(f"pruner {options.get('name')}: {e}") from None


_CHECKED_PRUNERS: dict[tuple, Any] = {}  # pruners the checks built and no run has taken yet


def _pruner_key(options: dict, keep: float, layout) -> tuple:
    return json.dumps(options, sort_keys=True, default=str), float(keep), layout


def take_checked_pruner(pruner: DictConfig | dict, keep: float, layout):
    """The pruner the run's check built for these options, keep and layout (unused), so that a run builds its
    pruner once; None when the check did not build one here (a run checked in another process)."""
    options = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else dict(pruner)
    return _CHECKED_PRUNERS.pop(_pruner_key(options, keep, layout), None)


def select_tasks(cfg: DictConfig, n_tasks: int, key: str = "tasks") -> list[int]:
    """The task ids `cfg[key]` names (null = every task of the suite)."""
    if cfg[key] is None:
        return list(range(n_tasks))
    bad = [t for t in cfg[key] if not 0 <= t < n_tasks]
    if bad:
        raise ConfigError(f"{key} {bad} do not exist in {cfg.suite.name}: valid task ids are 0..{n_tasks - 1}")
    return sorted(set(cfg[key]))
