"""Offline fidelity (`python -m evaluate.fidelity`): a small demo file, written here with the recorder from the
fixture's four real LIBERO frames, replayed through each tiny model with three pruners; settings that run the
dense computation (pruner none, any pruner at keep 1.0) give exactly the dense actions; bad input is one line
before weights load. No simulator."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from evaluate.demos import DemoRecorder
from evaluate.envs.libero import observation
from evaluate.fidelity.__main__ import main
from evaluate.policy import EpisodeContext
from tests.conftest import require_fixtures
from tests.test_demos import MALFORMED, good_file, spoil

INSTRUCTION = "pick up the alphabet soup and place it in the basket"
STEPS = 40
# model -> (actions a rollout executes per query, frames replayed per demo: 4 queries, so VLA-Pruner's 4th prunes,
# demos replayed: two where queries are cheap, to see each episode start afresh)
MODELS = {"openvla_tiny": (1, 4, 1), "openvla_oft_tiny": (8, 32, 2), "pi0_tiny": (5, 20, 1)}
PRUNERS = ("fastv", "vla", "divprune")
REQUIRED = ["pruner", "keep", "queries", "action_l1"]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """Two demos of 40 steps cycling through the fixture's raw (upside-down, 256 px) agent-view and wrist frames,
    with a made-up robot state and expert actions in the env's convention."""
    ref = np.load(require_fixtures() / "pi0_tiny_lerobot_reference.npz")
    root = tmp_path_factory.mktemp("demos")
    recorder = DemoRecorder(root, recorded_by="tests/test_fidelity.py")
    rng = np.random.default_rng(0)
    for init_index in (0, 1):
        recorder.start(EpisodeContext("libero_object", 0, INSTRUCTION, init_index, seed=7))
        for t in range(STEPS):
            i = (t + init_index) % 4
            state = ref["state_raw"][i]
            raw = {"agentview_image": ref["raw_agentview_256"][i], "robot0_eye_in_hand_image": ref["raw_wrist_256"][i],
                   "robot0_joint_pos": rng.normal(size=7), "robot0_gripper_qpos": state[6:8],
                   "robot0_eef_pos": state[:3] + 0.001 * t, "robot0_eef_quat": np.array([1.0, 0.0, 0.0, 0.0])}
            action = np.r_[rng.uniform(-0.5, 0.5, 6), 1.0 if t > STEPS // 2 else -1.0]
            recorder.add(observation(raw, INSTRUCTION), action)
        path = recorder.finish(success=True)
    return path


def fidelity(out, *overrides) -> pd.DataFrame:
    main([*overrides, f"out={out}", "device=cpu"])
    return pd.read_csv(out / "fidelity.csv")


@pytest.mark.parametrize("model", MODELS)
def test_replay_through_each_tiny_model(model, demo_file, tmp_path):
    executed, frames, episodes = MODELS[model]
    table = fidelity(tmp_path, f"source={demo_file}", f"model={model}", f"pruners=[none,{','.join(PRUNERS)}]",
                     "keeps=[1.0,0.25]", f"frames={frames}", f"episodes={episodes}")
    assert set(REQUIRED) <= set(table.columns)
    assert (table.queries == episodes * math.ceil(frames / executed)).all() and len(table) == 1 + 2 * len(PRUNERS)

    dense_like = table[(table.pruner == "none") | (table.keep == 1.0)]
    assert sorted(dense_like.pruner) == sorted(["none", *PRUNERS])
    for column in ("action_l1", "action_l1_p90", "chunk_l1", "chunk_l1_p90"):
        assert (dense_like[column] == 0.0).all(), column
    assert (dense_like.gripper_agreement == 1.0).all()
    if model == "openvla_tiny":
        assert (dense_like.token_agreement == 1.0).all() and (dense_like.bin_distance == 0.0).all()
    assert (dense_like.expert_l1 == dense_like.dense_expert_l1).all() and (table.dense_expert_l1 > 0).all()

    pruned = table[table.keep == 0.25].set_index("pruner")
    images = 1 if model == "openvla_tiny" else 2
    assert (pruned.kept_visual_pruned == 64 * images).all()  # the pruned queries; the headline counts every query
    assert (pruned.kept_visual >= pruned.kept_visual_pruned).all() and pruned.loc["vla", "kept_visual"] > 64 * images
    assert (pruned.prefill_tmacs < pruned.dense_prefill_tmacs).all()
    assert pruned.loc["vla", "warmup_queries"] == episodes * 3  # its dense warm-up, again in a second episode
    assert (pruned.action_l1 > 0).all()  # pruning moved the random-weight models' actions
    if model == "pi0_tiny":  # 5 of 50 actions executed: the whole chunk is another measure
        assert (pruned.chunk_l1 != pruned.action_l1).all()
    else:  # OpenVLA's one action, OpenVLA-OFT's 8: all of it executed
        assert (pruned.chunk_l1 == pruned.action_l1).all()

    per_query = pd.read_csv(tmp_path / "fidelity_queries.csv")
    steps = sorted(per_query[(per_query.pruner == "fastv") & (per_query.episode == 0)].step.unique())
    assert steps == list(range(0, frames, executed))  # the frames a rollout queries
    assert {"fidelity.md", "fidelity.png", "fidelity.json"} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("pruner", ["random", "sparsevlm", "vla_cache", "vla_released"])
def test_every_other_pruner_at_keep_one_is_dense(pruner, demo_file, tmp_path):
    table = fidelity(tmp_path, f"source={demo_file}", "model=openvla_oft_tiny", f"pruners=[{pruner}]",
                     "keeps=[1.0,0.5]", "frames=16", "episodes=1")
    at_one, at_half = (table[table.keep == k].iloc[0] for k in (1.0, 0.5))
    assert at_one.action_l1 == 0.0 and at_one.chunk_l1 == 0.0 and at_one.queries == 2
    assert at_half.prefill_tmacs <= at_one.prefill_tmacs  # over all queries (VLA-Pruner: 2 warm-ups)


def error_of(capsys, monkeypatch, *argv) -> str:
    import evaluate.policies

    monkeypatch.setattr(evaluate.policies, "build_policy", lambda cfg: pytest.fail("weights loaded"))
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    message = str(stop.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_bad_input_is_one_line_before_weights(demo_file, tmp_path, capsys, monkeypatch):
    src = f"source={demo_file}"
    assert "does not exist" in error_of(capsys, monkeypatch, f"source={tmp_path / 'nope'}")
    assert "holds no demos" in error_of(capsys, monkeypatch, f"source={tmp_path}")
    (tmp_path / "junk.hdf5").write_text("not hdf5")
    assert "is not a demo file" in error_of(capsys, monkeypatch, f"source={tmp_path / 'junk.hdf5'}")
    assert "source= is missing" in error_of(capsys, monkeypatch, "model=openvla_tiny")
    assert "unknown pruner 'fastvv'; valid choices:" in error_of(capsys, monkeypatch, src, "pruners=[fastvv]")
    assert "keep=1.5 is outside (0, 1]" in error_of(capsys, monkeypatch, src, "keeps=[0.5,1.5]")
    assert "not a number" in error_of(capsys, monkeypatch, src, "keeps=[half]")
    assert "frames=0 must be a positive integer" in error_of(capsys, monkeypatch, src, "frames=0")
    assert "list pruners with pruners=" in error_of(capsys, monkeypatch, src, "pruner=fastv")
    assert "the suite is the source demos' own" in error_of(capsys, monkeypatch, src, "suite=libero_goal")
    assert "unknown model 'nope'" in error_of(capsys, monkeypatch, src, "model=nope")
    # a pruner the model cannot run, named with its setting
    message = error_of(capsys, monkeypatch, src, "model=pi0_tiny", "pruners=[fastv,vla_cache]")
    assert "vla_cache" in message and "valid choices for pi0" in message and "setting:" in message


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_demo_is_refused_naming_the_file_before_weights(case, tmp_path, capsys, monkeypatch):
    path = good_file(tmp_path)
    expected = spoil(path, case)
    message = error_of(capsys, monkeypatch, f"source={tmp_path}", "model=openvla_tiny")
    assert str(path) in message and expected in message, message


def test_another_replays_results_are_not_overwritten(tmp_path, capsys, monkeypatch):
    """fidelity.csv of another replay (or of one that says nothing of itself) stays; the same replay run again may
    replace its own."""
    good_file(tmp_path / "demos")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fidelity.csv").write_text("mine")
    args = [f"source={tmp_path / 'demos'}", "model=openvla_tiny", f"out={out}", "pruners=[fastv]", "keeps=[0.5]"]
    assert "holds the results of another replay" in error_of(capsys, monkeypatch, *args)
    (out / "fidelity.json").write_text(json.dumps({"settings": [{"pruner": "vla", "keep": 0.5}]}))
    assert "(its model, suite, source, demos, seed, settings differ)" in error_of(capsys, monkeypatch, *args)
    import evaluate.policies
    from evaluate.fidelity.__main__ import replay_identity
    from evaluate.fidelity.config import check_settings, parse_args

    parsed = parse_args(args)
    dense, settings = check_settings(parsed, "libero_object", evaluate.policies.POLICIES)
    (out / "fidelity.json").write_text(json.dumps(replay_identity(parsed, dense, "libero_object", 1, settings)))
    monkeypatch.setattr(evaluate.policies, "build_policy", lambda cfg: pytest.fail("reached the weights"))
    with pytest.raises(pytest.fail.Exception, match="reached the weights"):  # the same replay again: past the check
        main(args)
    assert (out / "fidelity.csv").read_text() == "mine"


def test_expert_actions_map_back_to_the_models_space():
    """The expert's scale compares like with like: normalising is the inverse of each family's un-normalisation."""
    from evaluate.envs.libero_conventions import gripper_from_env, gripper_to_env
    from vla_pruner.models.openvla.action_tokenizer import normalize, unnormalize
    from evaluate.envs.libero_conventions import LIBERO_ACTION_STATS
    from vla_pruner.models.pi0.checkpoint import Pi0Stats

    rng = np.random.default_rng(1)
    model = np.c_[rng.uniform(-1, 1, (20, 6)), rng.integers(0, 2, (20, 1))]  # OpenVLA: gripper 0 close / 1 open
    stats = LIBERO_ACTION_STATS["libero_object"]
    np.testing.assert_allclose(normalize(gripper_from_env(gripper_to_env(unnormalize(model, stats))), stats), model,
                               atol=1e-12)
    pi0 = Pi0Stats(np.zeros(8), np.ones(8), rng.normal(size=7), rng.uniform(0.1, 1, 7), 1e-6)
    chunk = rng.normal(size=(50, 32))
    np.testing.assert_allclose(pi0.normalize_actions(pi0.unnormalize_actions(chunk)), chunk[:, :7], atol=1e-12)


def test_the_dense_model_told_another_instruction_is_one_more_setting(demo_file, tmp_path):
    """Issue 37: how far the instruction moves the actions, in the same table as how far pruning does."""
    table = fidelity(tmp_path, f"source={demo_file}", "model=openvla_oft_tiny", "pruners=[fastv]", "keeps=[0.5]",
                     "frames=16", "episodes=1", "instruction_from_task=3")
    told = table[table.told.fillna("") != ""]
    assert len(told) == 1 and len(table) == 2
    row = told.iloc[0]
    assert row.pruner == "none" and row.keep == 1.0 and "told" in row.method
    assert row.told == "pick up the bbq sauce and place it in the basket"  # libero_object task 3
    assert row.action_l1 > 0 and row.kept_visual == 512  # dense, but told something else


@pytest.mark.parametrize("args, message", [
    (["instruction=x", "instruction_from_task=1"], "give one of them"),
    (["instruction_from_task=10"], "instruction_from_task=10 is not a task of libero_object"),
    (["instruction_from_task=-1"], "must be a task id"),
])
def test_a_told_setting_that_cannot_be_is_one_error_line(args, message, demo_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([f"source={demo_file}", "model=openvla_oft_tiny", f"out={tmp_path}", *args])
    assert message in str(stopped.value) and str(stopped.value).startswith("error:")
