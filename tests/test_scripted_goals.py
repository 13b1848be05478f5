"""Goal parsing for the scripted expert: every libero_object/spatial task plans; unscriptable tasks skip."""
import os
from types import SimpleNamespace

import pytest

from evaluate.envs.libero_goals import PickPlace, UnsupportedGoal, parse_bddl, plan_goal
from evaluate.policies.scripted import ScriptedExpert
from evaluate.policies import POLICIES
from evaluate.policy import EpisodeContext, TaskNotSupported

benchmark = pytest.importorskip("libero.libero.benchmark")
from libero.libero import get_libero_path  # noqa: E402


def problem(suite: str, task_id: int) -> dict:
    task = benchmark.get_benchmark_dict()[suite]().get_task(task_id)
    return parse_bddl(os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file))


@pytest.mark.parametrize("task_id", range(10))
def test_libero_object_goal_is_basket(task_id):
    (step,) = plan_goal(problem("libero_object", task_id))
    assert step == PickPlace(step.obj, "basket_1_contain_region", "in", target_is_site=True)
    assert step.obj.split("_")[0] in benchmark.get_benchmark_dict()["libero_object"]().get_task(task_id).language


@pytest.mark.parametrize("task_id", range(10))
def test_libero_spatial_goal_is_bowl_on_plate(task_id):
    assert plan_goal(problem("libero_spatial", task_id)) == [
        PickPlace("akita_black_bowl_1", "plate_1", "on", target_is_site=False)]


def test_libero_10_two_step_goal_keeps_order():
    plan = plan_goal(problem("libero_10", 0))  # alphabet soup and tomato sauce in the basket
    assert [s.obj for s in plan] == ["alphabet_soup_1", "tomato_sauce_1"]


@pytest.mark.parametrize("suite,task_id,reason", [
    ("libero_goal", 0, "'open"),  # open the middle drawer
    ("libero_goal", 3, "needs opening wooden_cabinet_1"),  # put the bowl into the (closed) top drawer
    ("libero_goal", 7, "'turnon"),  # turn on the stove
    ("libero_10", 9, "'close"),  # mug into the microwave and close it
])
def test_unscriptable_goals_say_why(suite, task_id, reason):
    with pytest.raises(UnsupportedGoal, match=reason):
        plan_goal(problem(suite, task_id))


def test_reset_raises_task_not_supported_with_reason():
    env = SimpleNamespace(env=SimpleNamespace(parsed_problem=problem("libero_goal", 7)))
    ctx = EpisodeContext("libero_goal", 7, "turn on the stove", 0, seed=7, env=env)
    with pytest.raises(TaskNotSupported, match="turnon"):
        ScriptedExpert().reset(ctx)


def test_registered_and_documented_as_privileged():
    policy = POLICIES["scripted"].build(None)
    assert policy.describe()["privileged"] is True
