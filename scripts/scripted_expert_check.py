"""Run the privileged scripted expert on raw LIBERO, following the official protocol, and print success.

A quick environment self-check that needs no model weights and no harness:
    MUJOCO_GL=egl python scripts/scripted_expert_check.py --suite libero_object --inits 5
`--no-cameras` skips rendering (about 10x faster; physics and so success are unchanged), `--demos PATH`
records the successful episodes with `evaluate.demos.DemoRecorder`.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from evaluate.demos import DemoRecorder
from evaluate.policies.scripted import ScriptedExpert
from evaluate.policy import EpisodeContext, TaskNotSupported

MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
WAIT_STEPS = 10


def make_env(task, cameras: bool):
    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    from libero.libero.envs.env_wrapper import ControlEnv

    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    if cameras:
        return OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=256, camera_widths=256)
    return ControlEnv(bddl_file_name=bddl, use_camera_obs=False, has_offscreen_renderer=False)


def run_episode(env, policy, ctx: EpisodeContext, init_state, max_steps: int, recorder=None) -> dict:
    """One episode as the LIBERO protocol runs it; returns success, steps and the last phase."""
    env.reset()
    obs = env.set_init_state(init_state)
    for _ in range(WAIT_STEPS):
        obs, _, _, _ = env.step([0, 0, 0, 0, 0, 0, -1])
    policy.reset(ctx)
    if recorder:
        recorder.start(ctx)
    done, t, phase = False, 0, ""
    while t < max_steps and not done:
        out = policy.act(obs)
        phase = out.info.get("phase", "")
        for action in out.actions:
            if recorder:
                recorder.add(obs, action)
            obs, _, done, _ = env.step(action)
            t += 1
            if done or t >= max_steps:
                break
    if recorder:
        recorder.finish(bool(done))
    return {"success": bool(done), "steps": t, "phase": phase}


def main() -> None:
    from libero.libero import benchmark

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="libero_object")
    ap.add_argument("--tasks", type=int, nargs="*", help="task ids (default: all)")
    ap.add_argument("--inits", type=int, default=5, help="init states 0..N-1 per task")
    ap.add_argument("--no-cameras", action="store_true")
    ap.add_argument("--demos", help="HDF5 path to record successful episodes into")
    ap.add_argument("--out", help="JSON lines file for per-episode results")
    args = ap.parse_args()

    suite = benchmark.get_benchmark_dict()[args.suite]()
    tasks = args.tasks if args.tasks is not None else range(suite.get_num_tasks())
    recorder = DemoRecorder(args.demos) if args.demos else None
    policy, results = ScriptedExpert(), []
    for task_id in tasks:
        task = suite.get_task(task_id)
        env = make_env(task, cameras=not args.no_cameras)
        env.seed(0)
        inits = suite.get_task_init_states(task_id)
        for i in range(args.inits):
            ctx = EpisodeContext(args.suite, task_id, task.language, i, seed=0, env=env)
            t0 = time.time()
            try:
                rec = run_episode(env, policy, ctx, inits[i], MAX_STEPS[args.suite], recorder)
            except TaskNotSupported as e:
                rec = {"success": None, "skipped": str(e)}
            rec.update(suite=args.suite, task_id=task_id, init_index=i, seconds=round(time.time() - t0, 1))
            results.append(rec)
            print(json.dumps(rec), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if "skipped" in rec:
                break
        env.close()
    if recorder:
        recorder.close()
    ran = [r for r in results if r["success"] is not None]
    rate = np.mean([r["success"] for r in ran]) if ran else float("nan")
    print(f"{args.suite}: {sum(r['success'] for r in ran)}/{len(ran)} = {rate:.1%} "
          f"({len(results) - len(ran)} task(s) skipped)")


if __name__ == "__main__":
    main()
