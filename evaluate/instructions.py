"""Telling a policy something else: `instruction="..."` or `instruction_from_task=J` runs each task's own scene, init
states and success test while the policy is given another instruction (J's: another task of the same suite). Does a
policy read its instruction? In LIBERO-Goal, where the tasks share one scene, only the instruction says which task
it is: a policy that reads it fails its own task when told another one.

Both are part of a run's identity and name (`seed7-told_task4`, `seed7-told_put_the_bowl_on_the_plate`); refused
for policies that read no instruction (the scripted expert reads the task's goal from the simulator, noop nothing).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Sequence, TypeVar

from evaluate.errors import ConfigError

T = TypeVar("T")
SLUG_CHARS = 48  # a told instruction's run-name part: its words, then a hash if it was longer


def instruction_tag(instruction: str | None, from_task: int | None) -> str:
    """The run-name suffix of an override ('' without one)."""
    if from_task is not None:
        return f"-told_task{from_task}"
    if instruction is None:
        return ""
    slug = re.sub(r"[^a-z0-9]+", "_", instruction.lower()).strip("_")
    if len(slug) > SLUG_CHARS:
        slug = slug[:SLUG_CHARS] + "_" + hashlib.sha256(instruction.encode()).hexdigest()[:8]
    return f"-told_{slug}"


def check_instruction(cfg, uses_model: bool, tasks: int) -> None:
    """One `error:` line for an override that cannot mean anything."""
    instruction, from_task = cfg.get("instruction"), cfg.get("instruction_from_task")
    if instruction is None and from_task is None:
        return
    if instruction is not None and from_task is not None:
        raise ConfigError(f"instruction={instruction!r} and instruction_from_task={from_task}: give one of them")
    if not uses_model:
        raise ConfigError(f"policy={cfg.policy.name} reads no instruction (the scripted expert reads the task's goal "
                          f"from the simulator, noop nothing): instruction overrides apply to policy=vla")
    if instruction is not None and not str(instruction).strip():
        raise ConfigError("instruction='' is empty: give the words the policy is told, or leave it null")
    if from_task is not None and not 0 <= from_task < tasks:
        raise ConfigError(f"instruction_from_task={from_task} is not a task of {cfg.suite.name}: valid task ids are "
                          f"0..{tasks - 1}")


def told(cfg, tasks: Sequence[T]) -> list[T]:
    """The tasks, each with the instruction the run tells the policy (unchanged without an override)."""
    instruction, from_task = cfg.get("instruction"), cfg.get("instruction_from_task")
    if from_task is not None:
        instruction = tasks[from_task].instruction
    if instruction is None:
        return list(tasks)
    return [dataclasses.replace(task, instruction=instruction) for task in tasks]
