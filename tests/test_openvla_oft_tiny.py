"""The seeded tiny OFT (official OFT layout), the harness policy on a benchmark observation, configs, FLOPs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

# torch/transformers before evaluate.policies (whose package imports robosuite): the other order segfaults
from vla_pruner.models.openvla_oft.model import OpenVLAOFT
from evaluate.envs.libero_conventions import robot_state
from tests.tiny_models import tiny_oft as ensure_tiny_oft_checkpoint
from evaluate import flops  # noqa: I001
from evaluate.envs.base import PRIMARY, WRIST, Observation
from evaluate.policy import EpisodeContext
from evaluate.policies.vla_policy import build_vla_policy as build_openvla_oft_policy

INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer of the cabinet"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_tiny_oft_checkpoint(tmp_path_factory.mktemp("cache") / "openvla_oft_tiny-seed0", 0, INSTRUCTIONS)


def test_tiny_checkpoint_is_seeded_and_in_the_official_oft_layout(tiny, tmp_path):
    names = {p.name for p in tiny.iterdir()}
    assert {"config.json", "model.safetensors", "dataset_statistics.json", "action_head--0_checkpoint.pt",
            "proprio_projector--0_checkpoint.pt"} <= names
    head = torch.load(tiny / "action_head--0_checkpoint.pt", weights_only=True)
    assert all(k.startswith("module.") for k in head)
    stats = json.loads((tiny / "dataset_statistics.json").read_text())
    assert sorted(stats) == [f"libero_{s}_no_noops" for s in ("10", "goal", "object", "spatial")]
    assert all(len(s["proprio"]["q01"]) == 8 and len(s["action"]["q99"]) == 7 for s in stats.values())
    assert json.loads((tiny / "config.json").read_text())["norm_stats"] == stats
    again = torch.load(ensure_tiny_oft_checkpoint(tmp_path / "again", 0, INSTRUCTIONS)
                       / "action_head--0_checkpoint.pt", weights_only=True)
    other = torch.load(ensure_tiny_oft_checkpoint(tmp_path / "seed1", 1, INSTRUCTIONS)
                       / "action_head--0_checkpoint.pt", weights_only=True)
    assert all(torch.equal(head[k], again[k]) for k in head)
    assert not torch.equal(head["module.model.fc1.weight"], other["module.model.fc1.weight"])
    assert not [p for p in tiny.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def config(model_yaml="openvla_oft_tiny", suite="libero_spatial", pruner=None, keep=1.0, **model_overrides):
    model = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "model" / f"{model_yaml}.yaml"), model_overrides)
    return OmegaConf.create({"model": model, "suite": {"name": suite, "max_steps": 220}, "device": "cpu",
                             "seed": 7, "keep": keep, "pruner": pruner or {"name": "none"}})


def observation(seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    images = {role: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for role in (PRIMARY, WRIST)}
    state = robot_state([-0.2, 0.0, 1.17], [1.0, 0.0, 0.0, 0.0], [0.039, -0.039])
    return Observation(images=images, state=state, instruction=INSTRUCTIONS[0])


def test_policy_acts_in_chunks_of_eight_and_reports_the_query(tiny):
    policy = build_openvla_oft_policy(config(checkpoint=str(tiny), pruner={"name": "vla", "window": 1}, keep=0.25))
    assert policy.describe()["checkpoint"] == str(tiny) and policy.describe()["family"] == "openvla_oft"
    assert "means nothing" in policy.describe()["note"] and policy.model.unnorm_key == "libero_spatial_no_noops"
    policy.reset(EpisodeContext(suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0], init_index=0, seed=7))
    first, second = policy.act(observation(0)), policy.act(observation(1))
    for out in (first, second):
        assert out.actions.shape == (8, 7) and set(out.actions[:, -1]) <= {-1.0, 1.0}
        info = out.info
        assert set(info["latency_ms"]) == {"preprocess", "vision", "prefill", "decode", "total"}
        assert info["decode_steps"] == 0 and info["visual_tokens"] == 512 and len(info["prefill_tokens"]) == 8
        json.dumps(info)  # lands in the episode record
    assert first.info["warmup"] and first.info["kept_visual"] == 512  # history of one chunk fills first
    assert not second.info["warmup"] and second.info["kept_visual"] == 128
    assert second.info["pruning"][0]["kept"] == [64, 64]
    assert not np.allclose(first.actions[:, :6], second.actions[:, :6])


def test_policy_fails_early_without_statistics_for_the_suite(tiny):
    with pytest.raises(ValueError, match="no action statistics for 'libero_90_no_noops'"):
        build_openvla_oft_policy(config(suite="libero_90", checkpoint=str(tiny)))


def test_model_configs():
    for name in ("openvla_oft", "openvla_oft_tiny"):
        assert OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml").family == "openvla_oft"
    official = OmegaConf.load(REPO / "configs" / "model" / "openvla_oft.yaml")
    assert official.checkpoints.libero_10 == "moojink/openvla-7b-oft-finetuned-libero-10"


def test_flops_cli_models_oft(capsys):
    flops.main(["model=openvla_oft", "keep=0.25", "pruner=fastv"])
    out = capsys.readouterr().out
    assert "2 image(s) x 256 visual tokens" in out and "dense  prefill (605 tokens)" in out
    assert "221 tokens from there" in out  # 35 prompt + 58 extra + 2 x 64 visual


def test_tiny_model_loads_with_its_own_statistics(tiny):
    model = OpenVLAOFT.from_pretrained(tiny, device="cpu")
    assert model.normalize_proprio(np.zeros(8), "libero_goal").shape == (8,)
