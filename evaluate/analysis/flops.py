"""Compute cost of a VLA policy query, counted analytically from the architecture and the token counts used.

Unit everywhere: multiply-accumulates (MACs), the papers' "FLOPs (T)" (`vla_pruner.macs`). Each model family's
package counts its own queries (`vla_pruner/models/<family>/cost.py`: dimensions read from a config without weights,
and the MACs); this module finds a model's cost through its family record and runs the command.

CLI (no weights loaded): `python -m evaluate.flops model=openvla pruner=fastv keep=0.25 [prompt_tokens=35]`
prints the dense and pruned counts; its last line is the pruned count alone, in TMACs. The pruner is built and
checked exactly as a run builds it (same options, same errors, what the family's policy refuses), and the
per-layer token counts come from its plan: no stages (pruner=none) = dense, one stage = one cut, progressive
SparseVLM = its stage counts.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from vla_pruner.families import ModelFamily
    from vla_pruner.macs import ModelCost


log = logging.getLogger(__name__)


def model_family(model_cfg: Mapping) -> ModelFamily:
    """The record of the model's `family` (configs/model/*.yaml)."""
    from evaluate.config import ConfigError
    from vla_pruner.families import family_names, model_family as family_record

    family = model_cfg.get("family")
    if family not in family_names():
        raise ConfigError(f"model '{model_cfg.get('name')}' has family {family!r}; known: {', '.join(family_names())}")
    return family_record(family)


def model_dims(model_cfg: Mapping) -> ModelCost:
    """The cost of the model a `cfg.model` node (or a run identity's, whose shipped checkpoints are spelled
    portably) describes, without loading weights: a local checkpoint's config.json when there is one, else the
    architecture its family registers. Cached per node."""
    from evaluate.config import local

    key = json.dumps(model_cfg, sort_keys=True, default=str)
    if key not in _DIMS_CACHE:
        node = local(model_cfg)
        _warn_missing_checkpoints(node)
        _DIMS_CACHE[key] = model_family(model_cfg).model_cost(node)
    return _DIMS_CACHE[key]


def _warn_missing_checkpoints(model_cfg: Mapping) -> None:
    """A checkpoint path that is not on this machine (a run recorded elsewhere, a deleted directory) leaves the
    cost to the family's published architecture, which is only right for the official checkpoints: say so."""
    from vla_pruner.models.checkpoint import missing_directory, named_checkpoints

    if model_cfg.get("build_seed") is not None:  # a seeded model: its architecture is the family's tiny one
        return
    named = named_checkpoints(model_cfg)
    missing = [c for c in named if missing_directory(c)]
    if missing and not any(Path(c).expanduser().is_dir() for c in named):  # a present one gives the sizes
        log.warning("model %s: checkpoint %s is not on this machine; its FLOPs count the %s family's published "
                    "architecture", model_cfg.get("name"), ", ".join(missing), model_cfg.get("family"))


_DIMS_CACHE: dict[str, ModelCost] = {}


# ------------------------------------------------------------------------------------------------- CLI


def compose_config(overrides: list[str]):
    """The project's configs/config.yaml composed with Hydra overrides, plus this CLI's own keys; a bad override
    is a ConfigError in one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from evaluate.config import CONFIG_DIR, ConfigError, check_group_overrides, hydra_error_line

    check_group_overrides(overrides)
    own = {"prompt_tokens": None}  # None: the model's typical prompt (its cost's default)
    rest = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key in own:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{key}={value} must be a positive integer (non-visual prompt tokens)")
            own[key] = int(value)
        else:
            rest.append(arg)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=rest)
    except HydraException as e:  # an unknown key or a value of the wrong type
        raise ConfigError(hydra_error_line(e)) from None
    return OmegaConf.to_container(cfg, resolve=True), own


def report_lines(model_cfg: Mapping, pruner_cfg: Mapping, keep: float, prompt_tokens: int | None) -> list[str]:
    """The CLI's report; the pruner is built and checked as a run of the model's family builds it (ConfigError
    for bad options and for what the family cannot run)."""
    from evaluate.config import check_keep
    from evaluate.policies.vla import family_pruner

    check_keep(keep)
    family, cost = model_family(model_cfg), model_dims(model_cfg)
    pruner = family_pruner(family, pruner_cfg, keep, family.layout(cost.num_layers))
    return cost.report_lines(model_cfg["name"], pruner, keep, prompt_tokens)


def main(argv: list[str]) -> None:
    from evaluate.config import ConfigError
    from vla_pruner.models.checkpoint import CheckpointError

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        cfg, own = compose_config(argv)
        lines = report_lines(cfg["model"], cfg["pruner"], float(cfg["keep"]), own["prompt_tokens"])
    except (ConfigError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(lines))
