"""The VLA policies serving several episodes at once (num_envs > 1): a batched `act_batch` over slots gives each
episode what a policy serving it alone gives (actions, kept tokens, the pruner's history), also across prompts."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

# torch/transformers before evaluate.policies (whose package imports robosuite): the other order segfaults
from evaluate.envs.libero_conventions import robot_state
from tests.tiny_models import tiny_oft as ensure_tiny_oft_checkpoint, tiny_openvla as ensure_tiny_checkpoint
from evaluate.envs.base import PRIMARY, WRIST, Observation  # noqa: I001
from evaluate.policies.vla_policy import build_vla_policy
from evaluate.policy import EpisodeContext

from tests.conftest import REPO

INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer of the cabinet"]
MODELS = {"openvla_tiny": (ensure_tiny_checkpoint, build_vla_policy),
          "openvla_oft_tiny": (ensure_tiny_oft_checkpoint, build_vla_policy)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tmp_path_factory):
    ensure, build = MODELS[request.param]
    checkpoint = ensure(tmp_path_factory.mktemp("cache") / f"{request.param}-seed0", 0, INSTRUCTIONS)
    return request.param, checkpoint, build


def policy_for(model, pruner: dict, keep: float):
    name, checkpoint, build = model
    model_cfg = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml"),
                                {"checkpoint": str(checkpoint)})
    return build(OmegaConf.create({"model": model_cfg, "suite": {"name": "libero_spatial", "max_steps": 220},
                                   "device": "cpu", "seed": 7, "keep": keep, "pruner": pruner}))


def observation(seed: int, instruction: str) -> Observation:
    rng = np.random.default_rng(seed)
    images = {role: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for role in (PRIMARY, WRIST)}
    state = robot_state(rng.uniform(-0.3, 0.3, 3), [1.0, 0.0, 0.0, 0.0], [0.039, -0.039])
    return Observation(images=images, state=state, instruction=instruction)


def context(slot: int, instruction: str) -> EpisodeContext:
    return EpisodeContext(suite="libero_spatial", task_id=slot, instruction=instruction, init_index=slot, seed=7)


@pytest.mark.parametrize("pruner, keep", [({"name": "vla", "window": 2}, 0.25), ({"name": "fastv"}, 0.25),
                                          ({"name": "random"}, 0.5), ({"name": "none"}, 1.0),
                                          ({"name": "divprune"}, 0.25), ({"name": "vla_cache"}, 0.25)])
def test_a_batch_of_slots_equals_each_episode_alone(model, pruner, keep):
    """Three episodes, two of one prompt and one of another, four queries each: one act_batch per round against
    each slot queried alone (batch size 1) on a second policy."""
    batched, alone = policy_for(model, pruner, keep), policy_for(model, pruner, keep)
    prompts = [INSTRUCTIONS[0], INSTRUCTIONS[1], INSTRUCTIONS[0]]
    for slot, instruction in enumerate(prompts):
        batched.reset_slot(slot, context(slot, instruction))
        alone.reset_slot(slot, context(slot, instruction))
    for query in range(4):
        observations = [observation(10 * query + slot, prompts[slot]) for slot in range(3)]
        together = batched.act_batch(list(enumerate(observations)))
        for slot, (out, obs) in enumerate(zip(together, observations)):
            single = alone.act_batch([(slot, obs)])[0]
            np.testing.assert_allclose(out.actions, single.actions, atol=1e-5, rtol=0)
            assert out.info["batch_size"] == (2 if prompts[slot] == INSTRUCTIONS[0] else 1)
            assert single.info["batch_size"] == 1
            assert out.info["pruning"] == [] or (
                [p["kept_mask"] for p in out.info["pruning"]] == [p["kept_mask"] for p in single.info["pruning"]])
            assert out.info["kept_visual"] == single.info["kept_visual"]
    if pruner["name"] == "vla":  # each slot's own history, equal to the one of its episode alone
        for slot in range(3):
            for mine, theirs in zip(batched.slots[slot].pruner.history, alone.slots[slot].pruner.history):
                for a, b in zip(mine, theirs):
                    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        assert not out.info["warmup"] and out.info["kept_visual"] < out.info["visual_tokens"]


def test_slots_keep_their_own_pruner_and_reset_reuses_it(model):
    policy = policy_for(model, {"name": "vla", "window": 1}, 0.25)
    policy.reset_slot(0, context(0, INSTRUCTIONS[0]))
    policy.reset_slot(1, context(1, INSTRUCTIONS[0]))
    assert policy.slots[0].pruner is policy.pruner and policy.slots[1].pruner is not policy.pruner
    policy.act_batch([(0, observation(0, INSTRUCTIONS[0]))])  # slot 0's first (warm-up) query only
    first, second = policy.act_batch([(0, observation(1, INSTRUCTIONS[0])), (1, observation(2, INSTRUCTIONS[0]))])
    assert not first.info["warmup"] and second.info["warmup"]  # slot 1's history was still empty
    pruner = policy.slots[1].pruner
    policy.reset_slot(1, context(1, INSTRUCTIONS[1]))
    assert policy.slots[1].pruner is pruner and len(pruner.history) == 0
    with pytest.raises(RuntimeError, match=r"reset\(ctx\) must be called before act\(obs\) \(slots \[5\]\)"):
        policy.act_batch([(5, observation(3, INSTRUCTIONS[0]))])


def test_observations_prepared_in_the_workers_give_the_same_queries(model):
    """With num_envs > 1 the workers run the weight-free preprocessing (model_image) before the batched query."""
    from evaluate.policies.vla_policy import prepare_vla_observation

    name = model[0]
    cfg = OmegaConf.create({"model": {"name": name, "family": OmegaConf.load(
        REPO / "configs" / "model" / f"{name}.yaml").family}})
    raw, prepared = policy_for(model, {"name": "fastv"}, 0.25), policy_for(model, {"name": "fastv"}, 0.25)
    for policy in (raw, prepared):
        policy.reset_slot(0, context(0, INSTRUCTIONS[0]))
    obs = observation(3, INSTRUCTIONS[0])
    ready = prepare_vla_observation(cfg, obs)
    assert all(image.shape == (224, 224, 3) for image in ready.images.values())
    ours = prepared.act_batch([(0, ready)], prepared=True)[0]
    theirs = raw.act_batch([(0, obs)])[0]
    np.testing.assert_array_equal(ours.actions, theirs.actions)
    assert ours.info["pruning"][0]["kept_mask"] == theirs.info["pruning"][0]["kept_mask"]
