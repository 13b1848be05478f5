"""OpenVLA against the official implementation's outputs (fixture), and the cached decode against recomputation."""

import numpy as np
import pytest
import torch
from PIL import Image

from vla_pruner import OpenVLA, OpenVLAProcessor
from vla_pruner.models.llama import KVCache
from vla_pruner.models.openvla.model import EMPTY_TOKEN_ID, with_empty_token
from tests.tiny_models import tiny_openvla as ensure_tiny_checkpoint

from tests.conftest import FIXTURES, require_fixtures

CHECKPOINT = FIXTURES / "openvla_tiny_hf"
REFERENCE = FIXTURES / "openvla_tiny_hf_reference.npz"


@pytest.fixture(scope="module")
def fixture_model():
    require_fixtures()
    return OpenVLA.from_pretrained(CHECKPOINT, device="cpu", dtype="float32"), OpenVLAProcessor.from_pretrained(CHECKPOINT)


@pytest.fixture(scope="module")
def reference():
    require_fixtures()
    data = np.load(REFERENCE)
    return {k: data[k] for k in data.files}


def test_logits_match_the_official_implementation(fixture_model, reference):
    model, processor = fixture_model
    for image, prompt, last, mean in zip(
        reference["image"], reference["prompt"], reference["last_logits"], reference["mean_logits"]
    ):
        inputs = processor(str(prompt), Image.fromarray(image))
        input_ids = with_empty_token(inputs["input_ids"])
        with torch.inference_mode():
            logits = model(input_ids=input_ids, pixel_values=inputs["pixel_values"],
                           attention_mask=torch.ones_like(input_ids)).logits[0]
        assert logits.shape == (1 + 256 + input_ids.shape[1] - 1, 32064)
        assert np.abs(logits[-1].numpy() - last).max() < 1e-4
        assert np.abs(logits.mean(0).numpy() - mean).max() < 1e-4


def test_processor_output_matches_prismatic_processor_layout(fixture_model, reference):
    _, processor = fixture_model
    inputs = processor(str(reference["prompt"][0]), Image.fromarray(reference["image"][0]))
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    assert inputs["input_ids"][0, 0] == 1 and inputs["attention_mask"].all()
    assert inputs["pixel_values"].shape == (1, 6, 224, 224)
    x = reference["image"][0].astype(np.float32) / 255.0
    dino = (x - [0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])
    siglip = (x - 0.5) / 0.5
    expected = np.concatenate([dino, siglip], axis=2).transpose(2, 0, 1)
    assert np.abs(inputs["pixel_values"][0].numpy() - expected).max() < 1e-5


def greedy_by_recomputation(model, input_ids, pixel_values, n_tokens=7):
    """Reference decode: the full sequence through the uncached forward at every step."""
    sequence, step_logits = input_ids, []
    with torch.inference_mode():
        for _ in range(n_tokens):
            logits = model(input_ids=sequence, pixel_values=pixel_values).logits[:, -1]
            step_logits.append(logits)
            sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    return sequence[:, -n_tokens:], step_logits


def cached_step_logits(model, input_ids, pixel_values, tokens):
    """Logits of the prefill and of each single-token cached step, feeding the given tokens."""
    lm = model.language_model
    with torch.inference_mode():
        embeds = model.multimodal_embeds(input_ids, model.encode_image(pixel_values))
        S = embeds.shape[1]
        cache = KVCache(len(lm.layers))
        logits = [lm.logits(lm.run_layers(embeds, torch.arange(S)[None], cache))[:, -1]]
        for i, token in enumerate(tokens[0, :-1]):
            hidden = lm.run_layers(lm.embed(token.view(1, 1)), torch.tensor([[S + i]]), cache)
            logits.append(lm.logits(hidden)[:, -1])
    return logits


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return ensure_tiny_checkpoint(tmp_path_factory.mktemp("cache") / "openvla_tiny-seed0", 0, ["pick up the bowl"])


@pytest.mark.parametrize("which", ["fixture", "tiny"])
def test_cached_decode_equals_recomputing_the_sequence(which, fixture_model, reference, tiny_checkpoint):
    path = CHECKPOINT if which == "fixture" else tiny_checkpoint
    model, processor = fixture_model if which == "fixture" else (
        OpenVLA.from_pretrained(path, device="cpu"), OpenVLAProcessor.from_pretrained(path))
    inputs = processor(str(reference["prompt"][1]), Image.fromarray(reference["image"][1]))
    input_ids = with_empty_token(inputs["input_ids"])
    cached = model.predict_action_tokens(input_ids, inputs["pixel_values"])
    recomputed, full_logits = greedy_by_recomputation(model, input_ids, inputs["pixel_values"])
    assert torch.equal(cached, recomputed)
    step_logits = cached_step_logits(model, input_ids, inputs["pixel_values"], cached)
    for a, b in zip(step_logits, full_logits):
        assert (a - b).abs().max() < 1e-4


def test_empty_token_is_appended_once():
    ids = torch.tensor([[1, 5, 6]])
    once = with_empty_token(ids)
    assert once[0, -1] == EMPTY_TOKEN_ID and torch.equal(with_empty_token(once), once)


def test_padding_mask_hides_pad_tokens(fixture_model, reference):
    """A right-padded batch row gives the same logits on its real positions as the unpadded prompt."""
    model, processor = fixture_model
    inputs = processor(str(reference["prompt"][1]), Image.fromarray(reference["image"][1]))
    ids = with_empty_token(inputs["input_ids"])
    padded = torch.cat([ids, torch.full((1, 3), 32000)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 3, dtype=ids.dtype)], dim=1)
    with torch.inference_mode():
        plain = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits
        masked = model(input_ids=padded, pixel_values=inputs["pixel_values"], attention_mask=mask).logits
    assert (masked[:, : plain.shape[1]] - plain).abs().max() < 1e-4


def test_predict_action_is_the_unnormalised_decoded_action(fixture_model, reference):
    model, processor = fixture_model
    inputs = processor(str(reference["prompt"][0]), Image.fromarray(reference["image"][0]))
    action = model.predict_action(**inputs, unnorm_key="libero_spatial")
    tokens = model.predict_action_tokens(inputs["input_ids"], inputs["pixel_values"])[0].numpy()
    stats = model.norm_stats["libero_spatial"]["action"]
    normalized = model.action_tokenizer.bin_centers[np.clip(32000 - tokens - 1, 0, 254)]
    low, high = np.array(stats["q01"]), np.array(stats["q99"])
    expected = np.where(stats["mask"], 0.5 * (normalized + 1) * (high - low) + low, normalized)
    assert action.shape == (7,) and np.allclose(action, expected)
