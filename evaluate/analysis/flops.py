"""Compute cost of a VLA policy query, counted analytically from the architecture and the token counts used.

Unit everywhere: multiply-accumulates (MACs), the papers' "FLOPs (T)" (`vla_pruner.macs`). Each model family's
package counts its own queries (`vla_pruner/models/<family>/cost.py`: dimensions read from a config without weights,
and the MACs); this module finds a model's cost through its family record and runs the command.

CLI (no weights loaded): `python -m evaluate.flops model=openvla pruner=fastv keep=0.25 [prompt_tokens=35]
[episode_queries=15]` prints the dense and pruned counts (with a dense warm-up, an episode's mean); its last line
is the pruned count alone, in TMACs. The pruner is built and
checked exactly as a run builds it (same options, same errors, what the family's policy refuses), and the
per-layer token counts come from its plan: no stages (pruner=none) = dense, one stage = one cut, progressive
SparseVLM = its stage counts.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from vla_pruner.macs import UNIT

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
    # prompt_tokens None: the model's typical prompt (its cost's default); episode_queries: an episode's queries,
    # to count a dense warm-up into the episode's mean
    own = {"prompt_tokens": None, "episode_queries": None}
    rest = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key in own:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{key}={value} must be a positive integer "
                                  f"({'non-visual prompt tokens' if key == 'prompt_tokens' else 'queries'})")
            own[key] = int(value)
        else:
            rest.append(arg)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=rest)
    except HydraException as e:  # an unknown key or a value of the wrong type
        raise ConfigError(hydra_error_line(e)) from None
    return OmegaConf.to_container(cfg, resolve=True), own


def report_lines(model_cfg: Mapping, pruner_cfg: Mapping, keep: float, prompt_tokens: int | None,
                 episode_queries: int | None = None) -> list[str]:
    """The CLI's report; the pruner is built and checked as a run of the model's family builds it (ConfigError
    for bad options and for what the family cannot run). A pruner with a dense warm-up adds what an episode of
    `episode_queries` queries costs on average, its dense queries included (the last line stays the pruned query)."""
    from evaluate.config import check_keep
    from evaluate.policies.vla_policy import family_pruner

    check_keep(keep)
    family, cost = model_family(model_cfg), model_dims(model_cfg)
    layout = family.layout(cost.num_layers)
    pruner = family_pruner(family, pruner_cfg, keep, layout)
    lines = cost.report_lines(model_cfg["name"], pruner, keep, prompt_tokens)
    warmup = pruner.dense_warmup if pruner.plan.stages else 0
    if not warmup:
        return lines
    dense = float(cost.report_lines(model_cfg["name"], family_pruner(family, {"name": "none"}, 1.0, layout), 1.0,
                                    prompt_tokens)[-1])
    pruned = float(lines[-1])
    if episode_queries is None:
        episode = "give episode_queries=Q for the mean of a Q-query episode"
    else:
        dense_queries = min(warmup, episode_queries)
        mean = (dense_queries * dense + (episode_queries - dense_queries) * pruned) / episode_queries
        episode = f"an episode of {episode_queries} queries averages {mean:.6g} {UNIT} a query"
    note = (f"dense warm-up: the first {warmup} queries of each episode run dense ({dense:.6g} {UNIT} each); "
            f"{episode} (what a run's tables headline); the last line is one pruned query")
    return [*lines[:-1], note, lines[-1]]


def main(argv: list[str]) -> None:
    from evaluate.config import ConfigError
    from vla_pruner.models.checkpoint import CheckpointError

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        cfg, own = compose_config(argv)
        lines = report_lines(cfg["model"], cfg["pruner"], float(cfg["keep"]), own["prompt_tokens"],
                             own["episode_queries"])
    except (ConfigError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(lines))
