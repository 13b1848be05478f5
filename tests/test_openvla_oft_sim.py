"""OpenVLA-OFT (tiny) with every pruner on the real LIBERO simulator: two 8-step chunks per episode, the
policy built from the composed Hydra config as the CLI builds it."""
import numpy as np
import pytest

from evaluate.envs.libero import TaskEnv, load_suite
from evaluate.policies.openvla_oft import build_openvla_oft_policy
from evaluate.policy import EpisodeContext
from evaluate.rollout import run_episode
from tests.conftest import composed
from vla_pruner.models.openvla_oft import CHUNK

pytestmark = pytest.mark.sim

SUITE = "libero_spatial"


@pytest.fixture(scope="module")
def env():
    with TaskEnv(load_suite(SUITE)[0]) as env:
        yield env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tmp_path_factory.mktemp("cache") / "openvla_oft_tiny-seed0"  # built by the first policy


# pruner overrides -> visual tokens each of the two queries keeps (vla: a one-chunk history, so the first
# chunk runs dense and the second is pruned with its action scores)
CASES = {
    "none": ([], [512, 512]),
    "random": ([], [128, 128]),
    "fastv": ([], [128, 128]),
    "sparsevlm": ([], [128, 128]),
    "divprune": ([], [128, 128]),
    "vla": (["pruner.window=1"], [512, 128]),
}


@pytest.mark.parametrize("pruner", list(CASES))
def test_two_chunks_per_pruner(env, checkpoint, pruner):
    overrides, kept = CASES[pruner]
    cfg = composed("model=openvla_oft_tiny", f"model.checkpoint={checkpoint}", f"pruner={pruner}", "keep=0.25",
                   "device=cpu", f"suite={SUITE}", *overrides)
    policy = build_openvla_oft_policy(cfg)
    ctx = EpisodeContext(suite=SUITE, task_id=0, instruction=env.task.instruction, init_index=0, seed=cfg.seed)
    record = run_episode(env, policy, ctx, max_steps=2 * CHUNK)
    assert record.status == "ok", record.error
    assert record.steps == 2 * CHUNK and len(record.queries) == 2
    assert [q["kept_visual"] for q in record.queries] == kept
    for query in record.queries:
        assert query["decode_steps"] == 0 and query["latency_ms"]["total"] > 0
        assert np.isfinite(query["latency_ms"]["prefill"])
