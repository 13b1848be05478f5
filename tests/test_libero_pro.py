"""LIBERO-PRO's suites as a benchmark (issue 30), without a simulator: one row and one config per suite the
package can run, a one-line refusal with the reason for those it cannot, the base suite's checkpoint, statistics
and tasks, and the instruction the perturbed scene states where the perturbation changed it."""
from __future__ import annotations

import pytest

from evaluate.config import ConfigError, check_group_overrides, validate
from evaluate.envs.libero import benchmark_names, libero_tasks
from evaluate.envs.libero_pro import load_suite
from evaluate.envs.suites import PERTURBED, REFUSED_SUITES, SUITES, model_suite, suite_info
from evaluate.policies import POLICIES
from evaluate.policies.openvla_config import OpenVLAModelConfig, checkpoint_location
from tests.conftest import composed

PRO = [s for s in SUITES if s.benchmark == "libero_pro"]


def test_every_pro_suite_is_a_row_and_a_config_on_its_base_suite():
    assert len(PRO) == 25  # 4 suites x {lan, object, swap, task} + libero_object shifted along x (5) and y (4)
    for suite in PRO:
        assert suite.base in {b.name for b in PERTURBED} and model_suite(suite.name) == suite.base
        cfg = composed(f"suite={suite.name}")
        assert cfg.suite.name == suite.name and cfg.suite.max_steps == composed(f"suite={suite.base}").suite.max_steps
    assert model_suite("libero_long") == "libero_10" and model_suite("libero_10_lan") == "libero_10"


@pytest.mark.parametrize("kind", ["lan", "object", "swap", "task"])
def test_libero_long_names_libero_10s_perturbations_too(kind):
    """libero_long is an alias of libero_10, so libero_long_lan is one of libero_10_lan (issue 38); it was unknown."""
    cfg = composed(f"suite=libero_long_{kind}")
    assert cfg.suite.name == f"libero_10_{kind}" and suite_info(f"libero_long_{kind}").name == f"libero_10_{kind}"
    assert model_suite(f"libero_long_{kind}") == "libero_10" and cfg.suite.max_steps == 520
    check_group_overrides([f"suite=libero_long_{kind}"], {"suite": REFUSED_SUITES})


@pytest.mark.parametrize("name", sorted(REFUSED_SUITES))
def test_a_suite_the_package_cannot_run_is_refused_with_its_reason(name):
    expected = f"suite '{name}' cannot run: {REFUSED_SUITES[name]}"
    with pytest.raises(ConfigError) as error:
        check_group_overrides([f"suite=libero_object,{name}"], {"suite": REFUSED_SUITES})
    assert str(error.value) == expected and "\n" not in expected
    with pytest.raises(ConfigError, match="cannot run"):
        suite_info(name)


def test_the_refused_suites_still_lack_their_files():
    """The reasons are facts about the pinned package: if a release ships the files, this fails, and the suite
    belongs in the table."""
    registered = benchmark_names()
    for name in (n for n in REFUSED_SUITES if n.endswith(("_env", "_temp"))):
        assert name in registered
        assert not any(t.bddl_file.is_file() or t.init_states_file.with_suffix(".pruned_init.npz").is_file()
                       for t in libero_tasks(name))
    shifted = libero_tasks("libero_object", folder="libero_object_temp_y0.5")
    assert [len(t.init_states) for t in shifted].count(0) == 1 and len(shifted[1].init_states) == 0


@pytest.mark.parametrize("suite", PRO, ids=[s.name for s in PRO])
def test_tasks_are_the_base_suites_and_the_instruction_is_the_scenes_where_perturbed(suite):
    tasks, base = load_suite(suite.name), libero_tasks(suite.base)
    assert [t.name for t in tasks] == [t.name for t in base] and [t.suite for t in tasks] == [suite.name] * 10
    for task, original in zip(tasks, base):
        assert task.original_instruction == original.instruction
        assert task.bddl_file.parent.name == suite.name and task.init_states_file.parent.name == suite.name
        if suite.perturbation in ("lan", "task"):  # what the scene asks for changed: the policy is told so
            assert task.instruction == task.scene_instruction != original.instruction
        else:  # the same words as the base scene's: the policy gets the unperturbed run's instruction
            assert task.instruction == original.instruction


def test_a_perturbed_suite_runs_on_its_base_suites_checkpoint_and_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tmp_path))  # judged without building the tiny models
    cfg = composed("model=openvla", "suite=libero_spatial_lan")
    assert checkpoint_location(OpenVLAModelConfig.from_cfg(cfg.model), model_suite(cfg.suite.name)) == \
        "openvla/openvla-7b-finetuned-libero-spatial"
    for model in ("openvla_tiny", "openvla_oft_tiny"):  # statistics only for the four LIBERO suites
        validate(composed(f"model={model}", "suite=libero_10_lan", "pruner=vla", "keep=0.25"), POLICIES)
        validate(composed(f"model={model}", "suite=libero_object_temp_x0.3"), POLICIES)
