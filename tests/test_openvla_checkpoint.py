"""Loading checkpoints: clear errors for a missing directory, an unreachable hub id and mismatched weights."""
import json
import shutil

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_pruner import OpenVLA, OpenVLAProcessor
from vla_pruner.models.checkpoint import CheckpointError, resolve_device_dtype
from vla_pruner.models.openvla.config import OpenVLAConfig
from tests.tiny_models import tiny_openvla as ensure_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return ensure_tiny_checkpoint(tmp_path_factory.mktemp("cache") / "openvla_tiny-seed0", 0, ["pick up the bowl"])


def edited_checkpoint(source, target, edit):
    """A copy of `source` whose weights went through `edit(dict) -> dict`."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file(edit(load_file(source / "model.safetensors")), str(target / "model.safetensors"))
    return target


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint directory not found: {tmp_path / 'nope'}"):
        OpenVLA.from_pretrained(tmp_path / "nope")


def test_hub_id_without_hub_says_how_to_point_at_a_local_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for load in (OpenVLA.from_pretrained, OpenVLAProcessor.from_pretrained):
        with pytest.raises(CheckpointError) as error:
            load("openvla/openvla-7b-finetuned-libero-spatial")
        message = str(error.value)
        assert "\n" not in message and "neither a local directory nor reachable" in message
        assert "model.checkpoint=/path/to/openvla-7b-finetuned-libero-spatial" in message


def test_unexpected_weight_is_listed(tiny_checkpoint, tmp_path):
    path = edited_checkpoint(tiny_checkpoint, tmp_path / "ckpt",
                             lambda w: {**w, "projector.fc4.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"mismatched weights .*unexpected: projector\.fc4\.weight"):
        OpenVLA.from_pretrained(path, device="cpu")


def test_missing_weight_is_listed(tiny_checkpoint, tmp_path):
    key = "language_model.model.layers.3.mlp.up_proj.weight"
    path = edited_checkpoint(tiny_checkpoint, tmp_path / "ckpt", lambda w: {k: v for k, v in w.items() if k != key})
    with pytest.raises(CheckpointError, match=rf"mismatched weights .*missing: {key}"):
        OpenVLA.from_pretrained(path, device="cpu")


def test_wrong_shape_is_listed(tiny_checkpoint, tmp_path):
    key = "projector.fc3.bias"
    path = edited_checkpoint(tiny_checkpoint, tmp_path / "ckpt", lambda w: {**w, key: torch.zeros(3)})
    with pytest.raises(CheckpointError, match=rf"wrong shape: {key} \(3,\)"):
        OpenVLA.from_pretrained(path, device="cpu")


def test_never_run_vision_weights_may_be_absent(tiny_checkpoint, tmp_path):
    """The last ViT blocks, final norms and SigLIP's attention pool are documented as unused."""
    unused = ("vision_backbone.featurizer.blocks.2.", "vision_backbone.featurizer.norm.",
              "vision_backbone.fused_featurizer.blocks.2.", "vision_backbone.fused_featurizer.attn_pool.")
    path = edited_checkpoint(tiny_checkpoint, tmp_path / "ckpt",
                             lambda w: {k: v for k, v in w.items() if not k.startswith(unused)})
    full, pruned = OpenVLA.from_pretrained(tiny_checkpoint, device="cpu"), OpenVLA.from_pretrained(path, device="cpu")
    pixels = torch.randn(1, 6, 224, 224)
    with torch.inference_mode():
        assert torch.equal(full.encode_image(pixels), pruned.encode_image(pixels))


def test_layerscale_is_stored_as_scale_factor(tiny_checkpoint):
    stored = load_file(tiny_checkpoint / "model.safetensors")
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in stored
    assert not any(k.endswith(".gamma") for k in stored)


def test_dataset_statistics_file_overrides_config(tiny_checkpoint, tmp_path):
    path = edited_checkpoint(tiny_checkpoint, tmp_path / "ckpt", lambda w: w)
    stats = {"my_robot": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}
    (path / "dataset_statistics.json").write_text(json.dumps(stats))
    assert OpenVLA.from_pretrained(path, device="cpu").norm_stats == stats


def test_omitted_text_config_fields_take_llama2_7b_defaults():
    config = OpenVLAConfig.from_dict({"use_fused_vision_backbone": True, "timm_model_ids": ["a", "b"],
                                      "text_config": {"model_type": "llama", "vocab_size": 32064}})
    llama = config.llama_config()
    assert (llama.hidden_size, llama.intermediate_size, llama.num_hidden_layers) == (4096, 11008, 32)
    assert (llama.num_attention_heads, llama.num_key_value_heads, llama.rms_norm_eps) == (32, 32, 1e-6)
    assert llama.rope_parameters["rope_theta"] == 10000.0 and llama.max_position_embeddings == 2048
    assert llama._attn_implementation == "sdpa" and config.text_vocab_size == 32000


def test_device_and_dtype_resolution():
    assert resolve_device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cuda", "auto")[1] == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_device_dtype("cpu", "float8")


def test_bfloat16_load(tiny_checkpoint):
    model = OpenVLA.from_pretrained(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.language_model.rotary_emb.inv_freq.dtype == torch.float32


def test_sharded_checkpoint_loads_like_a_single_file(tiny_checkpoint, tmp_path):
    target = tmp_path / "sharded"
    shutil.copytree(tiny_checkpoint, target, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(tiny_checkpoint / "model.safetensors")
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({k: weights[k] for k in shard_keys}, str(target / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    single, sharded = OpenVLA.from_pretrained(tiny_checkpoint, device="cpu"), OpenVLA.from_pretrained(target, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(single.state_dict().values(), sharded.state_dict().values()))


def broken_copy(source, target, files: dict):
    """`source` with some files replaced by the given bytes (None: removed); the weights are linked, not copied,
    unless replaced."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    for name, data in files.items():
        (target / name).unlink(missing_ok=True)
        if data is not None:
            (target / name).write_bytes(data)
    return target


def half(path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


UNREADABLE = {  # files replaced -> the start of the error, naming the file
    "empty directory": (lambda ckpt: {p.name: None for p in ckpt.iterdir()},
                        "no config.json in checkpoint directory {d}"),
    "truncated weights": (lambda ckpt: {"model.safetensors": half(ckpt / "model.safetensors")},
                          "cannot read {d}/model.safetensors: not a complete safetensors file"),
    "empty weights file": (lambda ckpt: {"model.safetensors": b""},
                           "cannot read {d}/model.safetensors: not a complete safetensors file"),
    "garbage weights": (lambda ckpt: {"model.safetensors": b"Access denied\n" * 100},
                        "cannot read {d}/model.safetensors: not a complete safetensors file"),
    "truncated config.json": (lambda ckpt: {"config.json": half(ckpt / "config.json")},
                              "cannot read {d}/config.json: not valid JSON"),
    "config.json not an OpenVLA": (lambda ckpt: {"config.json": b'{"architectures": ["LlamaForCausalLM"]}'},
                                   "cannot use {d}/config.json: only the fused (two-ViT) OpenVLA vision backbone"),
    "config.json without text_config": (
        lambda ckpt: {"config.json": json.dumps({**json.loads((ckpt / "config.json").read_text()),
                                                 "text_config": None}).encode()},
        "cannot use {d}/config.json: no text_config object"),
    "binary dataset_statistics.json": (lambda ckpt: {"dataset_statistics.json": bytes(range(256))},
                                       "cannot read {d}/dataset_statistics.json: not valid JSON"),
    "garbage shard index": (lambda ckpt: {"model.safetensors": None, "model.safetensors.index.json": b"weight_map"},
                            "cannot read {d}/model.safetensors.index.json: not valid JSON"),
    "index naming a missing shard": (
        lambda ckpt: {"model.safetensors": None, "model.safetensors.index.json": json.dumps(
            {"weight_map": {"projector.fc1.weight": "model-00001-of-00002.safetensors"}}).encode()},
        "{d}/model.safetensors.index.json lists shards that are not in {d}: model-00001-of-00002.safetensors"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_file_is_one_line_naming_it(case, tiny_checkpoint, tmp_path):
    files, expected = UNREADABLE[case]
    path = broken_copy(tiny_checkpoint, tmp_path / "ckpt", files(tiny_checkpoint))
    with pytest.raises(CheckpointError) as error:
        OpenVLA.from_pretrained(path, device="cpu")
    message = str(error.value)
    assert message.startswith(expected.format(d=path)), message
    assert "\n" not in message
