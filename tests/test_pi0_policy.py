"""pi0 in the harness: the seeded tiny model and its tokenizer, openpi's LIBERO preprocessing against the fixture's
frames, the policy's chunking, relative actions, replayable noise and batching, and the pre-run errors."""
import numpy as np
import pytest

from evaluate.config import ConfigError, validate
from evaluate.envs.base import PRIMARY, WRIST, Observation
from evaluate.policies import POLICIES
from evaluate.envs.suites import suite_benchmark
from evaluate.policies.pi0 import ADAPTER, LoadedPi0, Pi0ModelConfig
from evaluate.policies.vla_policy import VLAPolicy
from evaluate.policy import EpisodeContext
from vla_pruner.models.pi0.model import Pi0
from vla_pruner.models.pi0.tiny import SPECIAL_IDS
from tests.tiny_models import tiny_pi0 as ensure_tiny_pi0
from vla_pruner.models.pi0.tokenizer import Pi0Tokenizer
from tests.conftest import composed, run_cli

INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "put the wine bottle on top of the cabinet"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return ensure_tiny_pi0(tmp_path_factory.mktemp("pi0") / "pi0_tiny-seed0", 0, INSTRUCTIONS)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return Pi0.from_pretrained(tiny_dir, device="cpu", dtype="float32"), Pi0Tokenizer.from_dir(tiny_dir, 48)


def test_tiny_build_is_seeded_and_reloads(tiny_dir, tmp_path):
    again = ensure_tiny_pi0(tmp_path / "again", 0, INSTRUCTIONS)
    other = ensure_tiny_pi0(tmp_path / "other", 1, INSTRUCTIONS)
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()


def test_tokens_follow_openpi_rule(tiny):
    _, tokenizer = tiny
    tokens, mask = tokenizer("Put the wine bottle on top of the cabinet\n")
    n = int(mask.sum())
    assert tokens.shape == mask.shape == (48,) and n == 1 + 9 + 1
    assert tokens[0] == SPECIAL_IDS["<bos>"] and tokens[n - 1] == SPECIAL_IDS["\n"] and not tokens[n:].any()
    assert SPECIAL_IDS["<unk>"] not in tokens[:n]
    long_tokens, long_mask = tokenizer(" ".join(["put"] * 80))
    assert long_mask.all() and long_tokens[0] == SPECIAL_IDS["<bos>"]


def test_frames_are_openpis(fixtures_dir):
    ref = np.load(fixtures_dir / "pi0_tiny_lerobot_reference.npz")
    for i in range(len(ref["raw_agentview_256"])):
        upright = {role: np.ascontiguousarray(ref[f"raw_{cam}_256"][i][::-1, ::-1])
                   for role, cam in ((PRIMARY, "agentview"), (WRIST, "wrist"))}
        frames = ADAPTER.prepare(Observation(upright, np.zeros(8), "x")).images
        assert np.array_equal(frames[PRIMARY], ref["image_agentview_224"][i])
        assert np.array_equal(frames[WRIST], ref["image_wrist_224"][i])


def observation(seed=0):
    rng = np.random.default_rng(seed)
    images = {role: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for role in (PRIMARY, WRIST)}
    return Observation(images, np.array([-0.2, 0.0, 1.1, 3.1, 0.0, -0.1, 0.03, -0.03]), INSTRUCTIONS[0])


def context(init=0, instruction=INSTRUCTIONS[0]):
    return EpisodeContext("libero_object", 0, instruction, init, 7)


def policy(tiny, pruner=None, keep=1.0, **fields):
    model, tokenizer = tiny
    return VLAPolicy(ADAPTER, LoadedPi0(model, tokenizer, Pi0ModelConfig(name="pi0_tiny", **fields)),
                     suite_benchmark("libero_object"), pruner or {"name": "none"}, keep)


def test_chunk_is_executed_in_replan_steps_and_replays(tiny):
    p = policy(tiny, replan_steps=5)
    p.reset(context())
    first = p.act(observation())
    assert first.actions.shape == (5, 7) and np.isfinite(first.actions).all()
    assert set(first.info["latency_ms"]) == {"preprocess", "vision", "prefill", "decode", "total"}
    assert (first.info["visual_tokens"], first.info["kept_visual"]) == (512, 512)  # the empty camera is no budget
    second = p.act(observation())
    assert not np.allclose(first.actions, second.actions)  # fresh noise each query
    p.reset(context())
    assert np.array_equal(p.act(observation()).actions, first.actions)  # the same episode replays
    assert policy(tiny, replan_steps=50).describe()["replan_steps"] == 50


def test_relative_actions_add_the_state(tiny):
    absolute, relative = policy(tiny), policy(tiny, relative_actions=True)
    assert absolute.describe()["relative_actions"] is False
    assert relative.describe()["relative_actions_from"] == "model.relative_actions"
    for p in (absolute, relative):
        p.reset(context())
    obs = observation()
    diff = relative.act(obs).actions - absolute.act(obs).actions
    np.testing.assert_allclose(diff[:, :6], np.broadcast_to(obs.state[:6], (5, 6)), atol=1e-9)
    assert np.all(diff[:, 6] == 0)


@pytest.mark.parametrize("pruner", [None, {"name": "fastv", "prune_layer": 2}], ids=["none", "fastv"])
def test_a_batch_of_slots_equals_each_episode_alone(tiny, pruner):
    batched, alone = policy(tiny, pruner, 0.25), policy(tiny, pruner, 0.25)
    contexts = [context(0), context(3, INSTRUCTIONS[1])]
    for slot, ctx in enumerate(contexts):
        batched.reset_slot(slot, ctx)
    outs = batched.act_batch([(0, observation(0)), (1, observation(1))])
    for slot, ctx in enumerate(contexts):
        alone.reset(ctx)
        single = alone.act(observation(slot))
        np.testing.assert_allclose(outs[slot].actions, single.actions, atol=1e-5)
        assert outs[slot].info["pruning"] == [{**s, "select_ms": outs[slot].info["pruning"][i]["select_ms"]}
                                              for i, s in enumerate(single.info["pruning"])]
        assert outs[slot].info["kept_visual"] == single.info["kept_visual"] == (128 if pruner else 512)
    assert outs[0].info["batch_size"] == 2


@pytest.mark.parametrize("overrides, message", [
    (["model=pi0"], "error: model pi0 needs a checkpoint directory: model.checkpoint="),
    (["model=pi0_tiny", "pruner=fastv", "pruner.prune_layer=3"], "error: pruner fastv: prune_layer=3 must be in 1..2"),
    (["model=pi0_tiny", "pruner=vla_cache"], "error: pruner 'vla_cache': VLA-Cache reuses the previous query's"),
    (["model=pi0_tiny", "model.replan_steps=0"], "error: model.replan_steps=0 must be an integer from 1"),
    (["model=pi0_tiny", "model.relative_actions=maybe"], "error: model.relative_actions='maybe'"),
    (["model=pi0", "model.checkpoint=/nonexistent/pi0"], "error: no config.json in pi0 checkpoint directory"),
])
def test_bad_inputs_fail_before_weights_load(overrides, message, tmp_path):
    result = run_cli(*overrides, f"output_root={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_a_checkpoint_without_tokenizer_is_refused(fixtures_dir):
    cfg = composed("model=pi0", f"model.checkpoint={fixtures_dir / 'pi0_tiny_lerobot'}")
    with pytest.raises(ConfigError, match="no tokenizer in .*paligemma_tokenizer.model"):
        validate(cfg, POLICIES)
