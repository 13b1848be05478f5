"""`policy=scripted`: a weight-free expert that should solve LIBERO pick-and-place tasks.

PRIVILEGED: it reads simulator state a learned policy never sees (object poses from the `<object>_pos`
observation entries, object meshes and region sites from the live env, the task's BDDL goal). Its use is
to tell a broken environment from a weak model: on a correctly installed stack it succeeds on nearly
every libero_object / libero_spatial episode, so a low score points at the setup, not at the model.

It follows the plan from `evaluate.goals` with delta end-effector actions (OSC_POSE, env convention
gripper -1 open / +1 close): above the object, descend, close, lift, above the target, lower, open, rise.
Hollow objects (bowls, mugs, plates) are grasped by the rim on the fingers' closing axis; a failed grasp
is retried. Tasks whose goal it cannot script raise `TaskNotSupported` from `reset()`.
"""
from __future__ import annotations

from typing import Iterator

import mujoco
import numpy as np
import robosuite.utils.transform_utils as T

from evaluate.goals import PickPlace, UnsupportedGoal, plan_goal
from evaluate.policy import EpisodeContext, PolicyOutput, register_policy

OPEN, CLOSE = -1.0, 1.0
POS_GAIN = 0.02  # metres of position error that saturate an action (OSC_POSE: 0.05 m per unit)
ROT_GAIN = 0.5  # radians of orientation error that saturate an action (OSC_POSE: 0.5 rad per unit)
RIM_GRASP = ("bowl", "mug", "plate", "ramekin")  # object categories grasped at the rim, not the centre
HOVER = 0.06  # fingertips this far above the object's top before descending
DROP = 0.02  # release when the carried object's bottom is this far above the target's top


class TaskNotSupported(Exception):
    """The task's goal cannot be scripted; the message is the reason the harness records."""


class ScriptedExpert:
    name = "scripted"

    def reset(self, ctx: EpisodeContext) -> None:
        if ctx.env is None:
            raise TaskNotSupported("the scripted expert needs the live env (ctx.env)")
        self.env = ctx.env.env  # the LIBERO problem env under OffScreenRenderEnv
        problem = self.env.parsed_problem
        try:
            self.plan = plan_goal(problem)
        except UnsupportedGoal as e:
            raise TaskNotSupported(str(e)) from e
        self.category = {inst: cat for cat, insts in problem["objects"].items() for inst in insts}
        self.obs: dict = {}
        self.ref_quat: np.ndarray | None = None
        self.phase = "start"
        self._script = self._run()

    def act(self, obs: dict) -> PolicyOutput:
        self.obs = obs
        if self.ref_quat is None:
            self.ref_quat = np.array(obs["robot0_eef_quat"])  # hold the start orientation (fingers down)
        action = next(self._script)
        return PolicyOutput(actions=action[None], info={"phase": self.phase})

    def describe(self) -> dict:
        return {"policy": "scripted", "privileged": True,
                "note": "reads simulator state (object poses, meshes, BDDL goal); a sanity check, not a model"}

    # --- the script -------------------------------------------------------------------------------

    def _run(self) -> Iterator[np.ndarray]:
        for step in self.plan:
            yield from self._pick(step.obj)
            while not self._lifted(step.obj):  # retry until it holds; the step limit ends hopeless cases
                yield from self._hold(OPEN, 8, "regrasp")
                yield from self._pick(step.obj)
            yield from self._place(step)
        self.phase = "done"
        while True:
            yield self._action(np.zeros(3), OPEN)

    def _pick(self, obj: str) -> Iterator[np.ndarray]:
        lo, hi = self._aabb(obj)
        self._lo0 = lo[2]
        grasp = self._grasp_point(obj, lo, hi)
        above = np.r_[grasp[:2], hi[2] + HOVER]
        yield from self._move(lambda: np.r_[self._eef()[:2], max(self._eef()[2], above[2])], OPEN, "rise", 0.02)
        yield from self._move(lambda: above, OPEN, "above_object")
        yield from self._move(lambda: grasp, OPEN, "descend", tol=0.008, max_steps=25)
        yield from self._hold(CLOSE, 12, "grasp")
        yield from self._move(lambda: grasp + [0, 0, 0.1], CLOSE, "lift", max_steps=30)
        yield from self._hold(CLOSE, 3, "lift")

    def _place(self, step: PickPlace) -> Iterator[np.ndarray]:
        def release_point() -> np.ndarray:
            xy, top = self._target(step)
            lo, _ = self._aabb(step.obj)
            hang = self._eef()[2] - lo[2]  # how far the object hangs below the fingertips
            offset = self._eef()[:2] - self._pos(step.obj)[:2]  # align the object, not the gripper
            return np.r_[xy + offset, top + DROP + hang]

        carry = lambda: np.r_[release_point()[:2], max(release_point()[2] + 0.05, self._eef()[2])]
        yield from self._move(carry, CLOSE, "carry", tol=0.015, max_steps=100)
        yield from self._move(release_point, CLOSE, "lower", tol=0.008, max_steps=40)
        yield from self._hold(OPEN, 10, "release")
        yield from self._move(lambda: self._eef() + [0, 0, 0.1], OPEN, "retreat", max_steps=10)

    # --- primitives -------------------------------------------------------------------------------

    def _move(self, target, grip: float, phase: str, tol: float = 0.01, max_steps: int = 80):
        """Step toward target() (re-read every step: objects move) until within tol or out of steps."""
        self.phase = phase
        for _ in range(max_steps):
            err = target() - self._eef()
            if np.linalg.norm(err) < tol:
                return
            yield self._action(err, grip)

    def _hold(self, grip: float, steps: int, phase: str):
        self.phase = phase
        for _ in range(steps):
            yield self._action(np.zeros(3), grip)

    def _action(self, pos_err: np.ndarray, grip: float) -> np.ndarray:
        rot_err = T.quat2axisangle(T.quat_multiply(self.ref_quat, T.quat_inverse(self.obs["robot0_eef_quat"])))
        return np.r_[np.clip(pos_err / POS_GAIN, -1, 1), np.clip(rot_err / ROT_GAIN, -1, 1), grip]

    # --- privileged state -------------------------------------------------------------------------

    def _eef(self) -> np.ndarray:
        return np.asarray(self.obs["robot0_eef_pos"], dtype=float)

    def _pos(self, obj: str) -> np.ndarray:
        return np.asarray(self.obs[f"{obj}_pos"], dtype=float)

    def _lifted(self, obj: str) -> bool:
        return self._aabb(obj)[0][2] > self._lo0 + 0.02

    def _grasp_point(self, obj: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        centre = (lo + hi) / 2
        if any(c in self.category[obj] for c in RIM_GRASP):
            axis = self._closing_axis()
            half = np.abs(axis[:2]) @ (hi - lo)[:2] / 2
            xy = centre[:2] + axis[:2] * (half - 0.012)
            return np.r_[xy, hi[2] - 0.02]
        # fingertips reach ~4 cm below the palm: tall objects are grasped near their top
        return np.r_[centre[:2], max(centre[2], hi[2] - 0.04)]

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


@register_policy("scripted")
def make_scripted(cfg=None) -> ScriptedExpert:
    return ScriptedExpert()
