"""Turn a LIBERO task's BDDL goal into a plan of pick-and-place steps for the scripted expert.

The goal comes from the parsed problem LIBERO builds from the task's .bddl file (`env.live.env.parsed_problem`
on a live env, or `parse_bddl(path)` without a simulator). Only goals made of `On`/`In` relations that a
top-down grasp can reach are scripted; anything else (opening drawers, turning knobs, closing doors, or
placing into a closed articulated container) raises `UnsupportedGoal` with a reason the harness records.
"""
from __future__ import annotations

import evaluate.envs.triton_before_mujoco  # noqa: F401,I001  (parse_bddl loads LIBERO, hence MuJoCo)

from dataclasses import dataclass

PLACE_RELATIONS = ("on", "in")
CLOSED_CONTAINERS = ("cabinet", "microwave")  # fixture categories whose "in" regions start closed


class UnsupportedGoal(ValueError):
    """The goal needs a skill the scripted expert does not have; the message says which."""


@dataclass(frozen=True)
class PickPlace:
    obj: str  # movable object instance to grasp, e.g. "akita_black_bowl_1"
    target: str  # object instance or region site to put it on/in, e.g. "basket_1_contain_region"
    relation: str  # "on" | "in"
    target_is_site: bool  # True: read the target's pose from the site; False: from `<target>_pos`


def parse_bddl(path: str) -> dict:
    """The parsed problem dict exactly as LIBERO's env builds it (no simulator needed)."""
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    return robosuite_parse_problem(path)


def plan_goal(problem: dict) -> list[PickPlace]:
    """One PickPlace per goal predicate, in the goal's order; raises UnsupportedGoal otherwise."""
    objects = {inst for insts in problem["objects"].values() for inst in insts}
    closed = {inst for cat, insts in problem["fixtures"].items() for inst in insts
              if any(c in cat for c in CLOSED_CONTAINERS)}
    regions = problem["regions"]
    goal = [(pred[0].lower(), *pred[1:]) for pred in problem["goal_state"]]
    for name, *args in goal:
        if name not in PLACE_RELATIONS:
            raise UnsupportedGoal(f"goal predicate '{name} {' '.join(args)}' needs an articulation skill")
    plan = []
    for name, obj, target in goal:
        if obj not in objects:
            raise UnsupportedGoal(f"'{obj}' is not a movable object")
        if target in objects:
            plan.append(PickPlace(obj, target, name, target_is_site=False))
            continue
        if target not in regions:
            raise UnsupportedGoal(f"unknown target '{target}'")
        parent = regions[target]["target"]
        if name == "in" and parent in closed:
            raise UnsupportedGoal(f"placing into '{target}' needs opening {parent} first")
        plan.append(PickPlace(obj, target, name, target_is_site=True))
    return plan
