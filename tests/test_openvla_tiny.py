"""The project's default model: built from a seed, cached in the official format, reloaded, and run as a policy."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from evaluate.envs.base import PRIMARY, Observation
from evaluate.policy import EpisodeContext
from evaluate.policies.vla_policy import VLAPolicy, build_vla_policy as build_openvla_policy
from vla_pruner import OpenVLA, OpenVLAProcessor, PruningEngine
from vla_pruner.models.openvla.processor import prompt_for
from tests.tiny_models import tiny_openvla as ensure_tiny_checkpoint

INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer of the cabinet"]
REPO = Path(__file__).resolve().parents[1]


def digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_tiny_checkpoint(tmp_path_factory.mktemp("cache") / "openvla_tiny-seed0", 0, INSTRUCTIONS)


def test_same_seed_same_weights_other_seed_other_weights(tiny, tmp_path):
    assert digest(ensure_tiny_checkpoint(tmp_path / "again", 0, INSTRUCTIONS)) == digest(tiny)
    assert digest(ensure_tiny_checkpoint(tmp_path / "seed1", 1, INSTRUCTIONS)) != digest(tiny)


def test_cached_checkpoint_is_reused_and_in_official_layout(tiny):
    before = (tiny / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_checkpoint(tiny, 0, INSTRUCTIONS) == tiny
    assert (tiny / "model.safetensors").stat().st_mtime_ns == before
    names = {p.name for p in tiny.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= names
    assert not [p for p in tiny.parent.iterdir() if p.name.startswith(".")]  # no staging dir left behind


def test_tokenizer_uses_llama2_id_layout(tiny):
    tokenizer = OpenVLAProcessor.from_pretrained(tiny).tokenizer
    ids = tokenizer(prompt_for(INSTRUCTIONS[0]))["input_ids"]
    assert ids[0] == 1 and 0 not in ids  # BOS first, every word known
    assert tokenizer.convert_tokens_to_ids(["</s>", "▁", "<PAD>"]) == [2, 29871, 32000]


def test_predict_action_is_finite_and_depends_on_the_image(tiny):
    model, processor = OpenVLA.from_pretrained(tiny, device="cpu"), OpenVLAProcessor.from_pretrained(tiny)
    rng = np.random.default_rng(0)
    tokens = set()
    for _ in range(3):
        image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
        inputs = processor(prompt_for(INSTRUCTIONS[0]), image)
        action = model.predict_action(**inputs, unnorm_key="libero_goal")
        assert action.shape == (7,) and np.isfinite(action).all()
        tokens.add(tuple(model.predict_action_tokens(inputs["input_ids"], inputs["pixel_values"])[0].tolist()))
    assert all(31744 <= t < 32000 for seq in tokens for t in seq)
    assert len(tokens) > 1


def test_processor_takes_numpy_images_and_refuses_bad_ones(tiny):
    processor = OpenVLAProcessor.from_pretrained(tiny)
    frame = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    prompt = prompt_for(INSTRUCTIONS[1])
    from_pil, from_array = processor(prompt, Image.fromarray(frame)), processor(prompt, frame)
    from_float = processor(prompt, frame / 255.0)
    for key in from_pil:
        assert torch.equal(from_array[key], from_pil[key]) and torch.equal(from_float[key], from_pil[key])
    with pytest.raises(ValueError, match=r"got shape \(3, 224, 224\)"):
        processor(prompt, frame.transpose(2, 0, 1))


def config(model_yaml="openvla_tiny", suite="libero_spatial", **model_overrides):
    model = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "model" / f"{model_yaml}.yaml"), model_overrides)
    return OmegaConf.create({"model": model, "suite": {"name": suite, "max_steps": 220}, "device": "cpu",
                             "seed": 7, "keep": 1.0, "pruner": {"name": "none"}})


def test_policy_acts_on_a_benchmark_observation(tiny, monkeypatch):
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tiny.parent))  # the default cache path is this checkpoint
    policy = build_openvla_policy(config())
    assert isinstance(policy, VLAPolicy) and policy.describe()["checkpoint"] == str(tiny)
    policy.reset(EpisodeContext(suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0], init_index=0, seed=7))
    frame = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = policy.act(Observation(images={PRIMARY: frame}, state=np.zeros(8), instruction=INSTRUCTIONS[0]))
    assert out.actions.shape == (1, 7) and out.actions[0, -1] in (-1.0, 1.0)
    assert set(out.info["latency_ms"]) >= {"vision", "prefill", "decode", "total"}
    assert "means nothing" in policy.describe()["note"]


def test_burn_in_warms_the_engine_act_times_and_leaves_the_pruner_fresh(tiny, monkeypatch):
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tiny.parent))
    engines = []
    prefill = PruningEngine.prefill

    def recording_prefill(engine, *args):
        engines.append(engine)
        return prefill(engine, *args)

    monkeypatch.setattr(PruningEngine, "prefill", recording_prefill)
    cfg = config()
    cfg.pruner, cfg.keep = {"name": "vla", "window": 1}, 0.25
    policy = build_openvla_policy(cfg)
    assert engines == [policy.model.engine]  # the burn-in query, through the engine act() runs
    assert len(policy.pruner.history) == 0  # its action attention is not history of an episode


def test_openvla_model_config_errors(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint for suite libero_90.*model.checkpoint="):
        build_openvla_policy(config("openvla", suite="libero_90"))
    with pytest.raises(RuntimeError, match="checkpoint directory not found"):
        build_openvla_policy(config("openvla", checkpoint=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="unknown model config fields"):
        build_openvla_policy(config("openvla", typo=1))


def test_policy_fails_early_without_statistics_for_the_suite(tiny, monkeypatch):
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tiny.parent))
    with pytest.raises(ValueError, match="no action statistics for 'libero_90'"):
        build_openvla_policy(config(suite="libero_90"))
