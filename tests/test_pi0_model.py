"""pi0 against LeRobot's own computation (fixture pi0_tiny_lerobot + its reference npz on 4 real LIBERO frames):
every stage to 1e-4 (image embeddings, prefix embeddings, prefix hidden states, KV cache per layer, v_t per Euler
step) and the sampled chunk from the same noise; plus the checkpoint errors a user can meet."""
import json
import shutil

import numpy as np
import pytest
import torch

from vla_pruner.models.checkpoint import CheckpointError
from vla_pruner.models.pi0.model import Pi0
from vla_pruner.models.pi0.checkpoint import module_key

ATOL = 1e-4  # the acceptance tolerance against LeRobot's outputs


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return {k: torch.from_numpy(v) for k, v in np.load(fixtures_dir / "pi0_tiny_lerobot_reference.npz").items()
            if v.dtype.kind != "U"}


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return Pi0.from_pretrained(fixtures_dir / "pi0_tiny_lerobot", device="cpu", dtype="float32")


def image_masks(ref):
    return torch.tensor([[True, True, False]] * ref["pixel_values"].shape[0])  # the third slot is the empty camera


def close(a, b, what):
    diff = (a - b).abs().max().item()
    assert diff < ATOL, f"{what}: max abs difference {diff}"


@pytest.fixture(scope="module")
def prefix(model, ref):
    with torch.inference_mode():
        images = model.embed_images(ref["pixel_values"])
        embeds, valid = model.embed_prefix(ref["pixel_values"], image_masks(ref), ref["lang_tokens"],
                                           ref["lang_masks"], images)
        cache, hidden = model.run_prefix(embeds, valid)
    return images, embeds, valid, cache, hidden


def test_sizes_come_from_the_weights(model):
    c = model.config
    assert (c.vlm.width, c.vlm.depth, c.vlm.num_heads, c.vlm.head_dim) == (128, 3, 8, 16)
    assert (c.expert.width, c.expert.mlp_dim, c.vision.hidden_size, c.vision.num_attention_heads) == (64, 192, 64, 4)
    assert (c.num_cameras, c.chunk_size, c.num_steps, c.relative_actions, model.layout) == (3, 50, 10, False, "lerobot")


def test_prefix_matches_lerobot(prefix, ref):
    images, embeds, valid, cache, hidden = prefix
    close(images, ref["image_embeddings"], "image embeddings")
    close(embeds, ref["prefix_embs"], "prefix embeddings (language scaled by sqrt(width) once)")
    assert torch.equal(valid, ref["prefix_pad_masks"])
    close(hidden, ref["prefix_last_hidden"], "prefix last hidden")
    for layer in range(len(cache.keys)):
        close(cache.keys[layer], ref["kv_keys"][layer], f"keys of layer {layer}")
        close(cache.values[layer], ref["kv_values"][layer], f"values of layer {layer}")
    assert torch.equal(cache.offset, ref["prefix_pad_masks"].sum(1))


def test_every_euler_step_matches_lerobot(model, prefix, ref):
    cache = prefix[3]
    state = model.pad_state(ref["state_norm"])
    with torch.inference_mode():
        for step in range(model.config.num_steps):
            v = model.velocity(cache, state, ref["x_t"][step], ref["timesteps"][step])
            close(v, ref["v_t"][step], f"v_t at step {step}")


def test_sampled_chunk_matches_lerobot_for_all_samples(model, ref):
    actions = model.sample_actions(ref["pixel_values"], image_masks(ref), ref["state_norm"], ref["lang_tokens"],
                                   ref["lang_masks"], noise=ref["noise"])
    assert actions.shape == (4, 50, 32)
    for i in range(4):
        close(actions[i], ref["actions_padded"][i], f"sample {i} padded chunk")
        close(actions[i, :, :7], ref["actions"][i], f"sample {i} normalized actions")
    unnorm = model.stats.unnormalize_actions(actions.numpy().astype(np.float64))
    np.testing.assert_allclose(unnorm, ref["actions_unnormalized"].numpy(), atol=ATOL)


def test_a_batch_of_one_equals_its_row_in_the_batch(model, ref):
    one = model.sample_actions(ref["pixel_values"][2:3], image_masks(ref)[2:3], ref["state_norm"][2:3],
                               ref["lang_tokens"][2:3], ref["lang_masks"][2:3], noise=ref["noise"][2:3])
    close(one[0], ref["actions_padded"][2], "batch-1 sample")


def test_masked_camera_changes_nothing_it_should_not(model, ref):
    """The empty slot is never a key: other pixels in it leave the chunk as it is."""
    pixels = ref["pixel_values"][:1].clone()
    pixels[:, 2] = torch.rand_like(pixels[:, 2]) * 2 - 1
    args = (image_masks(ref)[:1], ref["state_norm"][:1], ref["lang_tokens"][:1], ref["lang_masks"][:1])
    a = model.sample_actions(pixels, *args, noise=ref["noise"][:1])
    close(a[0], ref["actions_padded"][0], "chunk with other pixels in the masked slot")


def test_openpi_names_map_onto_the_same_modules():
    stored = "paligemma_with_expert.paligemma.model.language_model.layers.3.mlp.up_proj.weight"
    assert module_key(stored, "") == module_key("model." + stored, "model.") == "vlm.layers.3.mlp.up_proj.weight"
    assert module_key("paligemma_with_expert.paligemma.language_model.model.norm.weight", "") == "vlm.norm.weight"
    assert module_key("paligemma_with_expert.paligemma.lm_head.weight", "") is None
    assert module_key("state_proj.bias", "") == "state_proj.bias"


def openpi_copy(fixtures_dir, tmp_path, stats=True):
    """The fixture re-saved in openpi's converted layout: unprefixed keys, the embedding only as the tied head,
    an openpi config.json and assets/<id>/norm_stats.json."""
    from safetensors.torch import load_file, save_file

    src = fixtures_dir / "pi0_tiny_lerobot"
    tensors = {k.removeprefix("model."): v for k, v in load_file(src / "model.safetensors").items()}
    tensors["paligemma_with_expert.paligemma.lm_head.weight"] = tensors.pop(
        "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight")
    out = tmp_path / "openpi"
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"))
    shutil.copy(src / "tiny_dims.json", out)
    (out / "config.json").write_text(json.dumps({"action_dim": 32, "action_horizon": 50, "paligemma_variant": "gemma_2b",
                                                 "action_expert_variant": "gemma_300m", "precision": "float32"}))
    if stats:
        assets = out / "assets" / "physical-intelligence" / "libero"
        assets.mkdir(parents=True)
        ref = np.load(fixtures_dir / "pi0_tiny_lerobot_reference.npz")
        assets.joinpath("norm_stats.json").write_text(json.dumps({"norm_stats": {
            "state": {"mean": ref["state_mean"].tolist(), "std": ref["state_std"].tolist()},
            "actions": {"mean": ref["action_mean"].tolist(), "std": ref["action_std"].tolist()}}}))
    return out


def test_openpi_layout_loads_to_the_same_chunk(fixtures_dir, tmp_path, ref):
    model = Pi0.from_pretrained(openpi_copy(fixtures_dir, tmp_path), device="cpu", dtype="float32")
    assert model.layout == "openpi" and model.stats.eps == 1e-6
    a = model.sample_actions(ref["pixel_values"][:1], image_masks(ref)[:1], ref["state_norm"][:1],
                             ref["lang_tokens"][:1], ref["lang_masks"][:1], noise=ref["noise"][:1])
    close(a[0], ref["actions_padded"][0], "openpi layout chunk")


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "config.json").write_text("{"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text('{"type": "pi05"}'), "only pi0 is supported"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 10), "not a complete safetensors file"),
    (lambda d: shutil.rmtree(d / "assets"), "norm_stats.json"),
])
def test_broken_checkpoints_fail_naming_the_file(fixtures_dir, tmp_path, damage, message):
    directory = openpi_copy(fixtures_dir, tmp_path)
    damage(directory)
    with pytest.raises(CheckpointError, match=message):
        Pi0.from_pretrained(directory, device="cpu", dtype="float32")


def test_missing_weights_are_listed(fixtures_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = openpi_copy(fixtures_dir, tmp_path)
    tensors = load_file(directory / "model.safetensors")
    del tensors["action_out_proj.bias"]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing: action_out_proj.bias"):
        Pi0.from_pretrained(directory, device="cpu", dtype="float32")


def test_leaving_the_empty_camera_out_of_the_prefix_changes_no_output(model, ref):
    """`sample_actions` skips the masked third camera's rows (560 prefix tokens at the real size, 2 x 256 + 48 here)
    instead of computing them as masked keys as LeRobot does: the chunk equals that computation to 1e-5."""
    from vla_pruner.models.pi0.model import without_empty_cameras

    pixels, masks = without_empty_cameras(ref["pixel_values"], image_masks(ref))
    assert pixels.shape[1] == 2 and masks.all()
    lean = model.sample_actions(ref["pixel_values"], image_masks(ref), ref["state_norm"], ref["lang_tokens"],
                                ref["lang_masks"], noise=ref["noise"])
    with torch.inference_mode():
        embeds, valid = model.embed_prefix(ref["pixel_values"], image_masks(ref), ref["lang_tokens"], ref["lang_masks"])
        assert embeds.shape[1] == 3 * 256 + 48
        cache, _ = model.run_prefix(embeds, valid)
        full = model.integrate(cache, model.pad_state(ref["state_norm"]), ref["noise"])
    diff = (lean - full).abs().max().item()
    assert diff < 1e-5, f"without the empty camera's rows: {diff} from the dense model that computes them"
