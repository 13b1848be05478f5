"""The default model follows the machine (issue 30): with CUDA a command that names no model runs the paper's
OpenVLA with the official checkpoint of its suite, without CUDA the CPU default; a named model, an experiment
preset's model and policies without a model are left alone; sweeps get one choice for every point. CUDA is faked
here (torch.cuda.is_available / device_count); tests/test_libero_pro_sim.py runs the bare command on this CPU."""
from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir

from evaluate.config import CONFIG_DIR, ConfigError, run_identity
from evaluate.envs.suites import model_suite
from evaluate.model_choice import choose_model
from evaluate.policies import POLICIES
from evaluate.policies.openvla_config import OpenVLAModelConfig, checkpoint_location

BARE = ["suite=libero_long", "pruner=vla", "keep=0.125"]


@pytest.fixture(params=[True, False], ids=["cuda", "cpu"])
def cuda(request, monkeypatch) -> bool:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(request.param))
    return request.param


def composed(args: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[a for a in args if a not in ("-m", "--multirun")])


def test_the_bare_command_runs_openvla_with_cuda_and_the_cpu_default_without(cuda):
    args, line = choose_model(BARE, POLICIES)
    cfg = composed(args)
    if cuda:
        assert args[len(BARE):] == ["model=openvla", "model_choice=cuda_default"]
        assert line.startswith("model: openvla (CUDA is available: the paper's OpenVLA")
        location = checkpoint_location(OpenVLAModelConfig.from_cfg(cfg.model), model_suite(cfg.suite.name))
        assert location == "openvla/openvla-7b-finetuned-libero-10"  # configs/model/openvla.yaml, libero_long's
    else:  # libero_long: not the suite the CPU default was trained on
        assert args[len(BARE):] == ["model=openvla_oft_tiny", "model_choice=cpu_fallback"]
        assert line == ("model: openvla_oft_tiny (no CUDA GPU here, and the CPU default openvla_oft_small was trained "
                        "on libero_object only: the seeded random model, whose success means nothing; model=NAME "
                        "runs another)")
    assert cfg.model_choice == ("cuda_default" if cuda else "cpu_fallback")
    assert "model_choice" not in run_identity(cfg)  # the model itself is in the identity, how it was chosen is not


@pytest.mark.parametrize("suite", ["libero_object", "libero_object_lan", "libero_object_temp_x0.1"])
def test_on_its_own_suite_the_cpu_default_is_the_trained_policy(cuda, suite):
    args, line = choose_model([f"suite={suite}"], POLICIES)
    if cuda:
        assert args[1:] == ["model=openvla", "model_choice=cuda_default"]
    else:
        assert args[1:] == ["model=openvla_oft_small", "model_choice=cpu_default"]
        assert line == "model: openvla_oft_small (no CUDA GPU here: the CPU default; model=NAME runs another)"


@pytest.mark.parametrize("args", [["model=openvla_oft_tiny", *BARE], ["policy=noop"], ["policy=scripted"],
                                  ["-m", "policy=noop,scripted"]])
def test_a_named_model_or_a_policy_without_one_is_left_alone(cuda, args):
    assert choose_model(args, POLICIES) == (args, None)


def test_a_sweep_gets_one_choice_for_all_its_points(cuda):
    args = ["-m", "pruner=vla,fastv", "keep=0.5,0.25", "tasks=[0,3]", "policy=noop,vla"]
    chosen, line = choose_model(args, POLICIES)
    assert chosen[:len(args)] == args and line is not None
    assert chosen.count("model=openvla") == int(cuda) and chosen[-1].startswith("model_choice=")


def test_a_model_other_than_the_configured_default_is_left_alone(cuda, monkeypatch):
    """What an experiment preset's `override /model: ...` gives: a composed model that is not config.yaml's default."""
    import evaluate.model_choice as model_choice

    monkeypatch.setattr(model_choice, "configured_default", lambda group: "openvla_oft_tiny")
    assert choose_model(BARE, POLICIES) == (BARE, None)


@pytest.mark.parametrize("args", [["model_choice=cuda_default"], ["model=openvla_oft_tiny", "+model_choice=x"],
                                  ["policy=noop", "model_choice=cpu_default"]])
def test_a_typed_model_choice_is_refused(args):
    """It records what the machine chose (issue 38, item 11): typed, it would record a choice never made. (The CLI
    prints a ConfigError as its one error: line.)"""
    with pytest.raises(ConfigError, match=f"^{re.escape(args[-1])}: model_choice is set by python -m evaluate when "
                                          r"the machine chooses the model \(cuda_default, cpu_default, cpu_fallback\), "
                                          "not an option; name the model with model=NAME$"):
        choose_model(args, POLICIES)
