"""LIBERO-PRO (arXiv 2510.03827): LIBERO's tasks under perturbation, the `libero_pro` benchmark.

A PRO suite perturbs one of the four LIBERO suites (its `base`, evaluate/envs/suites.py): `_lan` paraphrases the
instruction, `_object` changes the objects' look, `_swap` their places, `_task` asks for another task in the same
scene, and libero_object's graded position shifts (`libero_object_temp_{x,y}{0.1..0.5}`) move the objects by a
set amount along one axis. The tasks, their order and their ids are the base suite's; each suite has BDDL and
init-state files of its own, so it runs on the LIBERO benchmark's environment (envs/libero.py) unchanged. The
package registers the four-by-four suites as benchmarks; the graded shifts have files but no benchmark, so their
tasks are the base suite's read from the shift's folder.

The instruction. LIBERO's evaluation gives the policy `task.language`, which the package derives from the task's
file name, so it is the ORIGINAL instruction even in the `_lan` and `_task` suites. What the perturbed scene
states is its BDDL's `:language` (the env's `language_instruction`). But that is not what an unperturbed run
gives the policy either: the LIBERO suites' own BDDL files word their tasks differently ("Pick the akita black
bowl ..." for "pick up the black bowl ..."), and the `_object`, `_swap` and shifted suites keep those words
unchanged. So the policy gets the scene's `:language` where the perturbation changed it from the base task's
(`_lan`, `_task`: every task), and the base suite's instruction where it did not (`_object`, `_swap`, the shifts),
so that a perturbed run differs from its unperturbed one by the perturbation alone. Each task keeps both texts
(`original_instruction`, `scene_instruction`); the episode records hold the one the policy got.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

from evaluate.envs.base import Benchmark
from evaluate.envs.libero import LiberoTask, TaskEnv, benchmark_names, libero_tasks, simulator_versions
from evaluate.envs.libero_conventions import actions_from_env, actions_to_env
from evaluate.envs.suites import suite_info


@dataclass(frozen=True)
class ProTask(LiberoTask):
    original_instruction: str = ""  # the base suite's instruction for this task (what an unperturbed run gives)
    scene_instruction: str = ""  # the perturbed BDDL's `:language` (= the env's language_instruction)


@lru_cache(maxsize=None)
def scene_instruction(bddl_file: str) -> str:
    """A BDDL file's `:language`, parsed as LIBERO's env parses it (so it equals `env.language_instruction`)."""
    from libero.libero.envs.bddl_utils import get_problem_info

    return get_problem_info(bddl_file)["language_instruction"]


def load_suite(suite: str) -> list[ProTask]:
    """The tasks of PRO suite `suite`, each with the instruction its scene states where the perturbation changed it
    (module docstring)."""
    base_suite = suite_info(suite).base
    tasks = libero_tasks(suite) if suite in benchmark_names() else libero_tasks(base_suite, folder=suite)
    out = []
    for task, base in zip(tasks, libero_tasks(base_suite), strict=True):
        if task.name != base.name:  # the task ids of a perturbed suite must be its base suite's
            raise RuntimeError(f"{suite} task {task.task_id} is {task.name}, not {base_suite}'s {base.name}")
        scene = scene_instruction(str(task.bddl_file))
        changed = scene != scene_instruction(str(base.bddl_file))
        values = {f.name: getattr(task, f.name) for f in fields(LiberoTask)}
        out.append(ProTask(**{**values, "suite": suite, "instruction": scene if changed else base.instruction},
                           original_instruction=base.instruction, scene_instruction=scene))
    return out


BENCHMARK = Benchmark(load_suite=load_suite, make_env=TaskEnv, versions=simulator_versions,  # LIBERO's conventions
                     actions_to_env=actions_to_env, actions_from_env=actions_from_env)
