"""`policy=scripted`: a weight-free expert that should solve LIBERO pick-and-place tasks.

PRIVILEGED: it reads simulator state a learned policy never sees (object poses from the `<object>_pos`
observation entries, object meshes and region sites from the live env, the task's BDDL goal). Its use is
to tell a broken environment from a weak model: on a correctly installed stack it succeeds on nearly
every libero_object / libero_spatial episode, so a low score points at the setup, not at the model.

It follows the plan from `evaluate.envs.libero_goals` with delta end-effector actions (OSC_POSE, env convention
gripper -1 open / +1 close): above the object, descend, close, lift, above the target, lower, open, rise.
Hollow objects (bowls, mugs, plates) are grasped by the rim on the fingers' closing axis; a failed grasp
is retried. Tasks whose goal it cannot script raise `TaskNotSupported` from `reset()`.

`policy.action_noise=S` (DART, Laskey et al. 2017) executes each moving action plus Gaussian noise of std S on the
six arm dimensions while recorded demonstrations keep the clean action: a policy cloned from them has seen the
expert recover from states just off its path, where a noise-free expert never goes.
"""
from __future__ import annotations

from typing import Iterator

import evaluate.envs.libero  # noqa: F401  (Triton, MUJOCO_GL and the simulator's log routing, before robosuite)
import mujoco
import numpy as np
import robosuite.utils.transform_utils as T

from evaluate.envs.libero_goals import PickPlace, UnsupportedGoal, plan_goal
from evaluate.envs.base import Observation
from evaluate.policy import EpisodeContext, PolicyOutput, TaskNotSupported

OPEN, CLOSE = -1.0, 1.0
POS_GAIN = 0.02  # metres of position error that saturate an action (OSC_POSE: 0.05 m per unit)
ROT_GAIN = 0.5  # radians of orientation error that saturate an action (OSC_POSE: 0.5 rad per unit)
RIM_GRASP = ("bowl", "mug", "plate", "ramekin")  # object categories grasped at the rim, not the centre
HOVER = 0.06  # fingertips this far above the object's top before descending
DROP = 0.02  # release when the carried object's bottom is this far above the target's top


class ScriptedExpert:
    name = "scripted"

    def __init__(self, action_noise: float = 0.0):
        self.action_noise = action_noise

    def reset(self, ctx: EpisodeContext) -> None:
        if ctx.env is None:
            raise TaskNotSupported("the scripted expert needs the live env (ctx.env)")
        self.env = ctx.env.env  # the LIBERO problem env inside the ControlEnv
        problem = self.env.parsed_problem
        try:
            self.plan = plan_goal(problem)
        except UnsupportedGoal as e:
            raise TaskNotSupported(str(e)) from e
        self.category = {inst: cat for cat, insts in problem["objects"].items() for inst in insts}
        self.obs: dict = {}
        self.ref_quat: np.ndarray | None = None
        self.phase = "start"
        self.moving = False
        # the episode's own noise stream: the same perturbations whichever worker runs it, and on a re-run
        self.rng = np.random.default_rng([ctx.seed, ctx.task_id, ctx.init_index, ctx.placement_seed or 0])
        self._script = self._run()

    def act(self, obs: Observation) -> PolicyOutput:
        self.obs = obs.raw  # privileged: the simulator's own observation (object poses, eef quaternion)
        if self.ref_quat is None:  # the start pose: fingers down, well above every object
            self.start_quat = self.ref_quat = np.array(self.obs["robot0_eef_quat"])
            self.start_axis = self._closing_axis()
            self.z_travel = float(self._eef()[2])
        action = next(self._script)
        if not (self.action_noise and self.moving):
            return PolicyOutput(actions=action[None], info={"phase": self.phase})
        executed = action.copy()
        executed[:6] = np.clip(action[:6] + self.rng.normal(0.0, self.action_noise, 6), -1, 1)
        return PolicyOutput(actions=executed[None], info={"phase": self.phase}, labels=action[None])

    def describe(self) -> dict:
        return {"policy": "scripted", "privileged": True, "action_noise": self.action_noise,
                "note": "reads simulator state (object poses, meshes, BDDL goal); a sanity check, not a model"}

    # --- the script -------------------------------------------------------------------------------

    def _run(self) -> Iterator[np.ndarray]:
        for step in self.plan:
            attempt = 0
            yield from self._pick(step.obj, attempt)
            while not self._lifted(step.obj):  # retry (other rim side); the step limit ends hopeless cases
                attempt += 1
                yield from self._hold(OPEN, 8, "regrasp")
                yield from self._pick(step.obj, attempt)
            yield from self._place(step)
        self.phase, self.moving = "done", False
        while True:
            yield self._action(np.zeros(3), OPEN)

    def _pick(self, obj: str, attempt: int) -> Iterator[np.ndarray]:
        lo, hi = self._aabb(obj)
        self._lo0 = lo[2]
        grasp, yaw = self._grasp_point(obj, lo, hi, attempt)
        travel = max(self.z_travel, hi[2] + HOVER)
        yield from self._move(lambda: np.r_[self._eef()[:2], travel], OPEN, "rise", tol=0.02)
        self.ref_quat = T.quat_multiply(T.axisangle2quat(np.r_[0, 0, yaw]), self.start_quat)
        yield from self._move(lambda: np.r_[grasp[:2], travel], OPEN, "above_object")
        yield from self._move(lambda: np.r_[grasp[:2], hi[2] + HOVER], OPEN, "hover")
        yield from self._move(lambda: grasp, OPEN, "descend", tol=0.008, max_steps=25)
        yield from self._hold(CLOSE, 12, "grasp")
        yield from self._move(lambda: np.r_[grasp[:2], travel], CLOSE, "lift", max_steps=30)
        yield from self._hold(CLOSE, 3, "lift")

    def _place(self, step: PickPlace) -> Iterator[np.ndarray]:
        def release_point() -> np.ndarray:
            xy, top = self._target(step)
            lo, _ = self._aabb(step.obj)
            hang = self._eef()[2] - lo[2]  # how far the object hangs below the fingertips
            offset = self._eef()[:2] - self._pos(step.obj)[:2]  # align the object, not the gripper
            return np.r_[xy + offset, top + DROP + hang]

        carry_z = lambda: max(self.z_travel, release_point()[2] + 0.05)
        yield from self._move(lambda: np.r_[self._eef()[:2], carry_z()], CLOSE, "lift", max_steps=20)
        yield from self._move(lambda: np.r_[release_point()[:2], carry_z()], CLOSE, "carry", tol=0.015, max_steps=100)
        yield from self._move(release_point, CLOSE, "lower", tol=0.008, max_steps=40)
        yield from self._hold(OPEN, 10, "release")
        yield from self._move(lambda: np.r_[self._eef()[:2], self.z_travel], OPEN, "retreat", max_steps=15)

    # --- primitives -------------------------------------------------------------------------------

    def _move(self, target, grip: float, phase: str, tol: float = 0.01, max_steps: int = 80):
        """Step toward target() (re-read every step: objects move) until within tol, out of steps, or
        stalled (blocked by contact: under 2 mm of motion in the last 6 steps)."""
        self.phase, self.moving = phase, True
        trail = []
        for _ in range(max_steps):
            err = target() - self._eef()
            trail = [self._eef(), *trail][:6]
            stalled = len(trail) == 6 and np.linalg.norm(trail[0] - trail[-1]) < 0.002
            if stalled or (np.linalg.norm(err) < tol and np.linalg.norm(self._rot_err()) < 0.1):
                return
            yield self._action(err, grip)

    def _hold(self, grip: float, steps: int, phase: str):
        self.phase, self.moving = phase, False  # unperturbed: a grasp or release in place
        for _ in range(steps):
            yield self._action(np.zeros(3), grip)

    def _action(self, pos_err: np.ndarray, grip: float) -> np.ndarray:
        return np.r_[np.clip(pos_err / POS_GAIN, -1, 1), np.clip(self._rot_err() / ROT_GAIN, -1, 1), grip]

    def _rot_err(self) -> np.ndarray:
        """World-frame axis-angle from the current to the wanted gripper orientation (OSC's convention)."""
        return T.quat2axisangle(T.quat_multiply(self.ref_quat, T.quat_inverse(self.obs["robot0_eef_quat"])))

    # --- privileged state -------------------------------------------------------------------------

    def _eef(self) -> np.ndarray:
        return np.asarray(self.obs["robot0_eef_pos"], dtype=float)

    def _pos(self, obj: str) -> np.ndarray:
        return np.asarray(self.obs[f"{obj}_pos"], dtype=float)

    def _lifted(self, obj: str) -> bool:
        return self._aabb(obj)[0][2] > self._lo0 + 0.02

    def _grasp_point(self, obj: str, lo: np.ndarray, hi: np.ndarray, attempt: int):
        """(fingertip point, gripper yaw from the start pose) for a top-down grasp of obj."""
        centre, size = (lo + hi) / 2, hi - lo
        axes = {yaw: T.quat2mat(T.axisangle2quat(np.r_[0, 0, yaw])) @ self.start_axis for yaw in (0.0, np.pi / 2)}
        if not any(c in self.category[obj] for c in RIM_GRASP):
            # close across the narrower side; fingertips reach ~4 cm below the palm, so tall objects
            # are grasped near their top
            yaw = min(axes, key=lambda y: np.abs(axes[y][:2]) @ size[:2] + (y != 0) * 0.01)
            return np.r_[centre[:2], max(centre[2], hi[2] - 0.04)], yaw
        # rims: where the wall crosses the closing axis; prefer sides with nothing overhead, then
        # no turn, then more room around; each retry takes the next candidate
        cands = []
        for yaw, axis in axes.items():
            half = np.abs(axis[:2]) @ size[:2] / 2
            for sign in (1, -1):
                xy = centre[:2] + sign * axis[:2] * (half - 0.012)
                key = (self._covered(obj, xy, axis, hi[2] - 0.02), yaw != 0, -self._clearance(obj, xy, lo[2]))
                cands.append((key, np.r_[xy, hi[2] - 0.02], yaw))
        cands.sort(key=lambda c: c[0])
        _, point, yaw = cands[attempt % len(cands)]
        return point, yaw

    def _covered(self, obj: str, xy: np.ndarray, axis: np.ndarray, z: float) -> bool:
        """Would the open fingers (tips at z, 4-5.5 cm either side of xy) or the hand (~20 x 6 cm, from 5 cm
        above z) hit something other than obj when descending onto xy?"""
        m, d = self.env.sim.model._model, self.env.sim.data._data
        names = {bid: name for name, bid in self.env.obj_body_id.items()}
        hit = np.array([-1], dtype=np.int32)
        for offset in (-0.055, -0.04, 0.0, 0.04, 0.055):  # open fingers' inner and outer faces
            start = np.r_[xy + offset * axis[:2], z + 0.3]
            while True:  # cast down, passing through the robot's own geoms
                dist = mujoco.mj_ray(m, d, start, np.r_[0.0, 0.0, -1.0], None, 1, -1, hit)
                if dist < 0 or start[2] - dist < z:
                    break
                body = m.geom_bodyid[hit[0]]
                while body not in names and m.body_parentid[body] != 0:
                    body = m.body_parentid[body]
                if body in names:
                    if names[body] != obj:
                        return True
                    break
                start = start - [0, 0, dist + 1e-4]
        half = 0.1 * np.abs(axis[:2]) + 0.03 * np.abs(axis[1::-1])
        for name in self.env.obj_body_id:
            lo, hi = self._aabb(name)
            if name != obj and hi[2] > z + 0.05 and np.all(xy - half < hi[:2]) and np.all(xy + half > lo[:2]):
                return True
        return False

    def _clearance(self, obj: str, xy: np.ndarray, floor: float) -> float:
        """Horizontal distance from xy to the nearest other body that rises above `floor`."""
        dists = [np.linalg.norm(self.env.sim.data.body_xpos[bid][:2] - xy)
                 for name, bid in self.env.obj_body_id.items()
                 if name != obj and self._aabb(name)[1][2] > floor + 0.01]
        return min(dists, default=np.inf)

    def _closing_axis(self) -> np.ndarray:
        d = self.env.sim.data
        axis = d.get_body_xpos("gripper0_leftfinger") - d.get_body_xpos("gripper0_rightfinger")
        axis[2] = 0
        return axis / np.linalg.norm(axis)

    def _target(self, step: PickPlace) -> tuple[np.ndarray, float]:
        """(xy the object's origin should reach, height of the surface it goes onto/into)."""
        if step.target_is_site:
            site = self.env.sim.data.get_site_xpos(step.target)
            parent = getattr(self.env.object_sites_dict[step.target], "parent_name", None)
            top = self._aabb(parent)[1][2] if parent in self.env.obj_body_id else site[2]
            return site[:2].copy(), top
        return self._pos(step.target)[:2], self._aabb(step.target)[1][2]

    def _aabb(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World-frame bounding box of a body's collision geometry (meshes: exact vertices)."""
        m, d = self.env.sim.model._model, self.env.sim.data._data
        root = self.env.obj_body_id[name]
        pts = []
        for g in range(m.ngeom):
            b = m.geom_bodyid[g]
            while b not in (0, root):
                b = m.body_parentid[b]
            if b != root or (m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0):
                continue
            rot, centre = d.geom_xmat[g].reshape(3, 3), d.geom_xpos[g]
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
                mesh = m.geom_dataid[g]
                local = m.mesh_vert[m.mesh_vertadr[mesh]: m.mesh_vertadr[mesh] + m.mesh_vertnum[mesh]]
            else:
                local = _CORNERS * _half_extents(m.geom_type[g], m.geom_size[g], m.geom_rbound[g])
            pts.append(local @ rot.T + centre)
        pts = np.concatenate(pts)
        return pts.min(0), pts.max(0)


_CORNERS = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=float)


def _half_extents(geom_type: int, size: np.ndarray, rbound: float) -> np.ndarray:
    """Half extents of a primitive geom in its own frame."""
    G = mujoco.mjtGeom
    if geom_type == G.mjGEOM_BOX:
        return size
    if geom_type == G.mjGEOM_CYLINDER:
        return np.r_[size[0], size[0], size[1]]
    if geom_type == G.mjGEOM_CAPSULE:
        return np.r_[size[0], size[0], size[1] + size[0]]
    return np.full(3, rbound)


def make_scripted(cfg=None) -> ScriptedExpert:
    """One option, policy.action_noise; every constant above is tuned for LIBERO's Panda + OSC_POSE setup."""
    return ScriptedExpert(float(cfg.policy.action_noise) if cfg is not None else 0.0)
