"""The resolvers configs/ uses (`${model_default:...}`, `${pruner_tag:...}`, `${project_path:...}` and the run-name
tags), registered once when evaluate.config is imported, before anything composes; and the pruner group's presets
they read."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluate.config.hydra_io import _config_repository, group_choices
from evaluate.config.schema import CONFIG_DIR
from evaluate.errors import ConfigError
from evaluate.instructions import instruction_tag


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
    for stem in group_choices("pruner"):  # configs/pruner/*.yaml, and those a package adds to the search path
        raw = group_file(CONFIG_DIR / "pruner" / f"{stem}.yaml") if (CONFIG_DIR / "pruner" / f"{stem}.yaml").is_file() \
            else _config_repository().load_config(f"pruner/{stem}").config
        if raw.get("name") == name:
            context = OmegaConf.create({"model": {"family": family, "name": model}, "pruner": raw})
            presets[stem] = OmegaConf.to_container(context.pruner, resolve=True)
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
