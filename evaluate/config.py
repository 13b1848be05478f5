"""Typed configuration: the schema Hydra checks, and the checks Hydra cannot express.

Every bad value fails before any simulator or model is built, in one line that names the value and the
valid choices.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from itertools import takewhile
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from evaluate.envs.suites import suite_info
from evaluate.errors import ConfigError  # noqa: F401  (where every check's callers import it from)
from evaluate.instructions import check_instruction, instruction_tag

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROJECT_PATH = re.compile(r"\$\{project_path:(.+)\}")  # how `portable` spells a file the repository ships
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
SAMPLED_EPISODES_MAX = 100_000  # with placement_seed: placements drawn by the sampler, seeds placement_seed + 0..N-1


@dataclass
class SuiteConfig:
    name: str = MISSING
    max_steps: int = MISSING


@dataclass
class PolicyConfig:
    name: str = MISSING
    label: str = MISSING
    action_noise: float = 0.0  # std of the noise the scripted expert adds to its moving actions (DART demonstrations)


@dataclass
class RemotePolicyConfig(PolicyConfig):
    """`policy=remote`'s own fields (configs/policy/remote.yaml extends this schema): the other policies' runs keep
    identities without them."""

    url: str = MISSING  # ws://HOST:PORT of a vla-eval model server
    timeout_s: float = 300.0  # the longest wait for one reply



@dataclass
class EvalConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    model: Any = MISSING  # each model family has its own fields (configs/model/*.yaml)
    pruner: Any = MISSING  # each pruner has its own options (configs/pruner/*.yaml)
    keep: float = 1.0
    seed: int = 7
    episodes_per_task: int = 50
    tasks: Optional[list[int]] = None
    expected_tasks: Optional[list[int]] = None
    device: str = "auto"
    video: bool = False
    record_demos: bool = False
    placement_seed: Optional[int] = None
    instruction: Optional[str] = None  # the policy is told this instead of each task's own (evaluate/instructions.py)
    instruction_from_task: Optional[int] = None  # ... or task J's instruction
    model_choice: Optional[str] = None  # set by the CLI when the machine chose the model (evaluate/model_choice.py)
    num_envs: int = 1
    worker_timeout_s: float = 600.0
    output_root: str = "runs"
    run_name: str = MISSING
    output_dir: str = MISSING


ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
ConfigStore.instance().store(name="remote_policy_schema", node=RemotePolicyConfig)


def model_default(option: str, family: str | None, model: str | None = None) -> Any:
    """The default of a pruner option for a model (by name) of a family: its family record's, else every
    family's (`vla_pruner.families.PRUNER_OPTION_DEFAULTS`)."""
    from vla_pruner.families import PRUNER_OPTION_DEFAULTS, family_names, model_family

    if option not in PRUNER_OPTION_DEFAULTS:
        raise ConfigError(f"no model-dependent default '{option}'; known: {', '.join(PRUNER_OPTION_DEFAULTS)}")
    if family not in family_names():
        return PRUNER_OPTION_DEFAULTS[option]
    return model_family(family).pruner_default(option, model)


def _model_default_resolver(option: str, _root_: DictConfig) -> Any:
    return model_default(option, OmegaConf.select(_root_, "model.family"), OmegaConf.select(_root_, "model.name"))


@lru_cache(maxsize=None)
def group_file(path: Path) -> DictConfig:
    """A config file as written (read once per process: run names and checks read the group files per sweep point)."""
    return OmegaConf.load(path)


def pruner_presets(name: str, family: str | None = None, model: str | None = None) -> dict[str, dict]:
    """The group files (configs/pruner/<stem>.yaml) that configure pruner `name`, by stem, with their option
    values resolved for `family` and `model` (e.g. vla.yaml and the vla_released.yaml preset both configure `vla`)."""
    presets = {}
    for path in sorted((CONFIG_DIR / "pruner").glob("*.yaml")):
        raw = group_file(path)
        if raw.get("name") == name:
            context = OmegaConf.create({"model": {"family": family, "name": model}, "pruner": raw})
            presets[path.stem] = OmegaConf.to_container(context.pruner, resolve=True)
    return presets


def pruner_tag(pruner: DictConfig | dict, family: str | None = None, model: str | None = None) -> str:
    """A run-directory name for a pruner: its group file's stem (`fastv`, `vla_released`), then the options that
    differ from that file's defaults for the model's family (`vla,criterion=fusion,window=5`), so that
    ablations get directories of their own. Of several files configuring the pruner, the closest one names it."""
    values = dict(pruner)
    presets = pruner_presets(values["name"], family, model) or {values["name"]: {}}

    def changed(stem: str) -> list[str]:
        defaults = presets[stem]
        return [f"{k}={_plain(v)}" for k, v in values.items() if k != "name" and defaults.get(k) != v]

    stem = min(presets, key=lambda s: (len(changed(s)), s != values["name"]))
    return ",".join([stem, *changed(stem)])


def _pruner_tag_resolver(pruner: DictConfig, _root_: DictConfig) -> str:
    return pruner_tag(OmegaConf.to_container(pruner, resolve=True), OmegaConf.select(_root_, "model.family"),
                      OmegaConf.select(_root_, "model.name"))


def _plain(value) -> str:
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return "+".join(map(str, value))
    return str(value)


OmegaConf.register_new_resolver("pruner_tag", _pruner_tag_resolver, replace=True)
OmegaConf.register_new_resolver("model_default", _model_default_resolver, replace=True)
# run names: episodes from sampled placements (placement_seed) are another experiment than the init states'
# a file shipped in the repository (the trained policy's checkpoint), wherever the command runs from
OmegaConf.register_new_resolver("project_path", lambda relative: str(CONFIG_DIR.parent / relative), replace=True)
OmegaConf.register_new_resolver("placements_tag", lambda seed: "" if seed is None else f"-placements{seed}",
                                replace=True)
# the policy told another instruction than each task's own is another experiment
OmegaConf.register_new_resolver("instruction_tag", instruction_tag, replace=True)
# a model loaded from a checkpoint the command names runs in a directory of its own (a sweep over checkpoints gets one
# each; two checkpoints whose directories share a name still meet the identity check); tables still say model.name
OmegaConf.register_new_resolver("checkpoint_tag", lambda model: "" if model.get("checkpoint") is None
                                else "@" + Path(str(model.checkpoint).rstrip("/")).name, replace=True)
# the scripted expert perturbed for DART demonstrations is another policy than the clean one
OmegaConf.register_new_resolver("noise_tag", lambda noise: f"-noise{noise}" if noise else "", replace=True)

# Fields that do not change what an episode's outcome is; a resumed run may change them.
NON_IDENTITY_FIELDS = ("tasks", "expected_tasks", "episodes_per_task", "video", "record_demos", "num_envs",
                       "worker_timeout_s", "output_root", "output_dir", "run_name", "model_choice")


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
                          f"(README, Configuration)")


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
    import baselines

    options = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else dict(pruner)
    try:
        if layout is None:
            baselines.pruner_config(options)
            return None
        return baselines.build_pruner(options, keep, layout)
    except ValueError as e:
        raise ConfigError(f"pruner {options.get('name')}: {e}") from None


def select_tasks(cfg: DictConfig, n_tasks: int, key: str = "tasks") -> list[int]:
    """The task ids `cfg[key]` names (null = every task of the suite)."""
    if cfg[key] is None:
        return list(range(n_tasks))
    bad = [t for t in cfg[key] if not 0 <= t < n_tasks]
    if bad:
        raise ConfigError(f"{key} {bad} do not exist in {cfg.suite.name}: valid task ids are 0..{n_tasks - 1}")
    return sorted(set(cfg[key]))


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
