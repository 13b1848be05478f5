"""An OpenVLA checkpoint's typed config (config.json + dataset_statistics.json), and the check that reads every
file loading needs without reading a tensor, so that a run can refuse a broken checkpoint before it starts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub.errors import StrictDataclassError

from vla_pruner.models.checkpoint import (CONFIG_FILE, PREPROCESSOR_FILE, STATS_FILE, TOKENIZER_CONFIG_FILE,
                                          TOKENIZER_FILES, CheckpointError, open_weights, read_json, weight_files)
from vla_pruner.models.openvla.config import OpenVLAConfig


def read_config(directory: Path) -> tuple[OpenVLAConfig, dict[str, Any]]:
    """Typed config plus the raw dict; `dataset_statistics.json` (if present) replaces config.norm_stats."""
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in checkpoint directory {directory}")
    raw = read_json(config_file)
    stats_file = directory / STATS_FILE
    if stats_file.is_file():
        raw["norm_stats"] = read_json(stats_file)
    try:
        config = OpenVLAConfig.from_dict(raw)
    except ValueError as e:
        raise CheckpointError(f"cannot use {config_file}: {e}") from None
    try:  # transformers' own field validation (a string where a width belongs), here rather than at model build
        config.llama_config()
    except (ValueError, TypeError, KeyError, StrictDataclassError) as e:
        raise CheckpointError(f"cannot use {config_file}: text_config: {' '.join(str(e).split())}") from None
    return config, raw


def check_checkpoint_files(directory: Path) -> tuple[OpenVLAConfig, dict[str, Any]]:
    """Everything loading reads, checked without reading a tensor: config.json (+ dataset_statistics.json),
    every weights file's header (which must cover the file), the tokenizer and the preprocessor config.
    Returns what `read_config` does."""
    config, raw = read_config(directory)
    for file in weight_files(directory):
        with open_weights(file):
            pass
    for name in (TOKENIZER_CONFIG_FILE, PREPROCESSOR_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"no {name} in checkpoint directory {directory}")
        read_json(directory / name)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(f"no {' or '.join(TOKENIZER_FILES)} (tokenizer) in checkpoint directory {directory}")
    return config, raw
