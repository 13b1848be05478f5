"""Finding and reading checkpoints in the Hugging Face layout (OpenVLA's config.json: openvla/checkpoint.py).

A checkpoint is a directory with config.json, model.safetensors (or a sharded model.safetensors.index.json),
the tokenizer files, preprocessor_config.json and optionally dataset_statistics.json. Loading is strict:
every stored tensor must map onto a parameter and every parameter must be stored, except the vision
weights that never run (see `vision.unused_parameter_prefixes`). A file that cannot be read (missing,
truncated, not JSON, not safetensors) is a `CheckpointError` naming the file, and `check_checkpoint_files`
(openvla/checkpoint.py) finds those without reading a tensor, so that a run can refuse a broken checkpoint before it starts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open

CONFIG_FILE = "config.json"
STATS_FILE = "dataset_statistics.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # either: the fast or the sentencepiece vocabulary
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EXAMPLE_OVERRIDE = "model.checkpoint=/path/to/openvla-7b-finetuned-libero-spatial"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or does not fit the model; the message says what to do."""


def _local_dir(path_or_id: str | Path) -> Path | None:
    """The local directory `path_or_id` names, None for a hub id, CheckpointError for neither."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if not _HUB_ID.match(str(path_or_id)):
        raise CheckpointError(f"checkpoint directory not found: {path}")
    return None


def named_checkpoints(model_cfg: Mapping) -> list[str]:
    """The checkpoints a `cfg.model` node names: `checkpoint`, then each of `checkpoints` (one per suite)."""
    return [str(c) for c in (model_cfg.get("checkpoint"), *(model_cfg.get("checkpoints") or {}).values()) if c]


def missing_directory(path_or_id: str | Path) -> bool:
    """True when `path_or_id` is a path (not a hub id) with no directory there on this machine."""
    try:
        _local_dir(path_or_id)
    except CheckpointError:
        return True
    return False


def resolve_checkpoint(path_or_id: str | Path) -> Path:
    """A local checkpoint directory, or a hub id fetched through the Hugging Face cache where a hub is reachable."""
    local = _local_dir(path_or_id)
    if local is not None:
        return local
    text = str(path_or_id)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as e:  # offline, unknown repo, no permission: all end the same way
        raise CheckpointError(
            f"{text!r} is neither a local directory nor reachable on the Hugging Face hub "
            f"({type(e).__name__}); download it elsewhere and point at the local directory, e.g. {EXAMPLE_OVERRIDE}"
        ) from None


def locate_checkpoint(path_or_id: str | Path) -> Path | None:
    """`resolve_checkpoint` without a download: the local directory, a hub id's snapshot already in the Hugging
    Face cache, or None for a hub id only a download can bring (whether a hub is reachable is not known
    before trying)."""
    local = _local_dir(path_or_id)
    if local is not None:
        return local
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(path_or_id), CONFIG_FILE)
    return Path(cached).parent if isinstance(cached, str) else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the checkpoint; anything else is a CheckpointError naming the file."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"cannot read {path}: expected a JSON object, found {type(value).__name__}")
    return value


def weight_files(directory: Path) -> list[Path]:
    index = directory / WEIGHTS_INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"cannot read {index}: no weight_map of tensor names to shard files")
        shards = [directory / s for s in sorted(set(map(str, weight_map.values())))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shards that are not in {directory}: {', '.join(missing)}")
        return shards
    single = directory / WEIGHTS_FILE
    if single.is_file():
        return [single]
    raise CheckpointError(f"no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in checkpoint directory {directory}")


def open_weights(file: Path):
    """`safe_open` on one weights file (reads its header only); a truncated or non-safetensors file is a
    CheckpointError naming it."""
    try:
        return safe_open(str(file), framework="pt")
    except SafetensorError as e:
        raise CheckpointError(f"cannot read {file}: not a complete safetensors file ({e})") from None


def to_module_key(stored: str) -> str:
    """The official code renames timm's LayerScale `gamma` to `scale_factor` (HF mangles `gamma`); undo it."""
    return re.sub(r"\.(ls[12])\.scale_factor$", r".\1.gamma", stored)


def to_stored_key(module_key: str) -> str:
    return re.sub(r"\.(ls[12])\.gamma$", r".\1.scale_factor", module_key)


def iter_tensors(directory: Path) -> Iterator[tuple[str, Any]]:
    """(module key, lazy tensor slice) for every stored tensor, shard by shard."""
    for file in weight_files(directory):
        with open_weights(file) as f:
            for key in f.keys():
                yield to_module_key(key), f.get_tensor(key)


def load_weights(
    model: torch.nn.Module, directory: Path, optional_prefixes: list[str], device: torch.device, dtype: torch.dtype
) -> None:
    """Assign stored tensors to `model` (built on the meta device); fail listing every mismatch."""
    expected = model.state_dict()
    seen: set[str] = set()
    unexpected, wrong_shape = [], []
    loaded: dict[str, torch.Tensor] = {}
    for key, tensor in iter_tensors(directory):
        if key not in expected:
            unexpected.append(to_stored_key(key))
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            wrong_shape.append(f"{to_stored_key(key)} {tuple(tensor.shape)} != {tuple(expected[key].shape)}")
            continue
        seen.add(key)
        loaded[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    missing = [k for k in expected if k not in seen and not k.startswith(tuple(optional_prefixes))]
    if unexpected or missing or wrong_shape:
        raise CheckpointError(f"mismatched weights in {directory}: " + _describe(missing, unexpected, wrong_shape))
    for key in expected:  # never-run weights the checkpoint left out: allocate, never read
        if key not in loaded:
            loaded[key] = torch.zeros(expected[key].shape, device=device, dtype=dtype)
    model.load_state_dict(loaded, strict=True, assign=True)


def _describe(missing: list[str], unexpected: list[str], wrong_shape: list[str], limit: int = 8) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def resolve_device_dtype(device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"):
    """"auto" -> CUDA if available, else CPU; bf16 on CUDA, fp32 on CPU."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use auto or one of {sorted(names)}")
        dtype = names[dtype]
    return dev, dtype
