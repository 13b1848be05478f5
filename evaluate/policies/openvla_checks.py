"""The check before a run of a model of the OpenVLA architecture (openvla, openvla_oft): whatever building the policy would trip over that the config and the
checkpoint's files tell without loading a tensor or starting a simulator. Model fields and dtype, the
device, the checkpoint (there, complete, readable, of the model's family), the suite's statistics in it and
the pruner built on the model's layout, as the policy builds it. Each failure is one ConfigError line.

A tiny (seeded) model that is not in the cache yet is checked against what it will be built as, and not built.
A hub id that is not in the Hugging Face cache is left to the load (only a download can tell).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from evaluate.config import ConfigError, build_checked_pruner
from evaluate.envs.suites import model_suite
from evaluate.policies.adapter import check_dtype_and_device
from evaluate.policies.openvla_config import OpenVLAModelConfig, checkpoint_location
from vla_pruner.families import ModelFamily, family_names, model_family
from vla_pruner.models.checkpoint import CONFIG_FILE, CheckpointError, locate_checkpoint
from vla_pruner.models.openvla.checkpoint import check_checkpoint_files
from vla_pruner.models.openvla.config import OpenVLAConfig
from vla_pruner.models.openvla.cost import architecture, variant_of
from vla_pruner.models.seeded import tiny_checkpoint_built


def check_openvla_model(cfg: DictConfig, family: ModelFamily, tiny_stats: dict) -> None:
    """Raise ConfigError for the first thing `cfg` (a model of `family`, of the OpenVLA architecture) cannot run
    with; the other families of the architecture are asked to name the one a checkpoint of the wrong family is of.
    `tiny_stats`: the statistics a tiny model of the family is built with (the benchmark's)."""
    model = OpenVLAModelConfig.from_cfg(cfg.model)
    check_dtype_and_device(model.dtype, cfg.device)
    suite = model_suite(cfg.suite.name)  # a perturbed suite: its base suite's checkpoint and statistics
    location = checkpoint_location(model, suite)
    try:
        config, norm_stats, source = inspect_checkpoint(cfg.model, model, location, family, openvla_families(),
                                                        tiny_stats)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    variant = variant_of(family)
    if norm_stats is not None:
        key = variant.unnorm_key(model.unnorm_key, suite)
        try:
            variant.select_stats(norm_stats, key)
        except ValueError as e:
            raise ConfigError(f"suite {cfg.suite.name}: {e} ({source}); choose statistics with model.unnorm_key=...")
    layout = None if config is None else family.layout(config.llama_config().num_hidden_layers)
    build_checked_pruner(cfg.pruner, cfg.keep, layout)


def openvla_families() -> list[ModelFamily]:
    """Every family of the OpenVLA architecture (its record's cost is an `OpenVLAVariant`)."""
    return [f for f in map(model_family, family_names()) if variant_of(f) is not None]


def inspect_checkpoint(model_node: DictConfig, model: OpenVLAModelConfig, location: str, spec: ModelFamily,
                       specs: list[ModelFamily], tiny_stats: dict) -> tuple[OpenVLAConfig | None, dict[str, Any] | None, str]:
    """(architecture, statistics, where they come from) of the checkpoint at `location`; None for what only
    a download would tell."""
    variant = variant_of(spec)
    if model.build_seed is not None:
        directory = Path(location).expanduser()
        if (directory / CONFIG_FILE).is_file():  # what is there, checked as it is (its family first), then its seed
            config, raw = check_checkpoint_files(directory)
            # a tiny base of the same seed whose family parts are added when the policy is built
            parts_pending = (bool(variant.part_files) and raw.get("build_seed") == model.build_seed
                             and not family_parts(directory, spec))
            check_family(directory, spec, specs, parts_pending)
        if not tiny_checkpoint_built(directory, model.build_seed):  # built on first use: check what it will be
            return (OpenVLAConfig.from_dict(variant.tiny_config()), tiny_stats,
                    f"{model.name} as it will be built")
        stats = tiny_stats if parts_pending else config.norm_stats
        return config, stats, f"checkpoint {directory}"
    directory = locate_checkpoint(location)
    if directory is None:  # a hub id not in the local cache
        try:
            return architecture(model_node, variant), None, location
        except ConfigError:  # an architecture known only from the download; the options are still checked
            return None, None, location
    config, _ = check_checkpoint_files(directory)
    check_family(directory, spec, specs, parts_pending=False)
    return config, config.norm_stats, f"checkpoint {directory}"


def family_parts(directory: Path, spec: ModelFamily) -> list[Path]:
    return [f for pattern in variant_of(spec).part_files for f in sorted(directory.glob(pattern))]


def detect_family(directory: Path, specs: list[ModelFamily]) -> tuple[ModelFamily, list[Path]]:
    """The family whose own files the checkpoint holds (and those files), else the one that has none."""
    for spec in specs:
        found = family_parts(directory, spec)
        if variant_of(spec).part_files and found:
            return spec, found
    return next(s for s in specs if not variant_of(s).part_files), []


def check_family(directory: Path, spec: ModelFamily, specs: list[ModelFamily], parts_pending: bool) -> None:
    """The checkpoint must be of `spec`'s family: one of another family loads too (the base weights are the
    same) and would run with the wrong observation and decoding, silently. Its own files must be readable."""
    found_spec, found = detect_family(directory, specs)
    if parts_pending:
        return
    part_files = variant_of(spec).part_files
    if found_spec is not spec:
        what = f"it has {', '.join(f.name for f in found)}" if found else f"it has no {' or '.join(part_files)}"
        raise ConfigError(f"checkpoint {directory} is an {found_spec.name} checkpoint ({what}), but the model's "
                          f"family is {spec.name}: use a model of family {found_spec.name}, "
                          f"e.g. model={found_spec.name}")
    for pattern in part_files:
        files = sorted(directory.glob(pattern))
        if len(files) != 1:
            raise ConfigError(f"checkpoint {directory} needs exactly one {pattern}, found "
                              f"{', '.join(f.name for f in files) or 'none'}")
        if not zipfile.is_zipfile(files[0]):
            raise ConfigError(f"cannot read {files[0]}: not a complete torch checkpoint (zip archive)")
