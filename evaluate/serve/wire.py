"""What travels over vla-eval's model-server protocol, in the convention of vla-eval's own LIBERO benchmark
(vla_eval.benchmarks.libero): the observation our server reads and our remote policy sends, the action coming back,
and the specs and observation parameters both sides declare. One module, so that our server answers vla-eval's
LIBERO client and anyone's vla-eval server answers our client.

The observation is `{"images": {"agentview": HxWx3 uint8, "wrist": ...}, "task_description": str, "states": (8,)}`:
images upright (LIBERO's raw frames rotated 180 degrees, as the harness's), the state `[eef position, axis-angle of
the eef quaternion, gripper joint positions]`. vla-eval's LIBERO sends the axis-angle with the angle in [0, pi]
(quaternions with w < 0 flipped) unless the server asks `quat_no_antipodal`; the harness's state, like the LIBERO
datasets the OpenVLA-OFT checkpoints were trained on, keeps robosuite's angle in [0, 2 pi], which our server asks for.
NumPy only (the simulator workers import it without torch).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from evaluate.envs.base import PRIMARY, WRIST, Observation

CAMERA_KEYS = {PRIMARY: "agentview", WRIST: "wrist"}  # camera role -> the key vla-eval's LIBERO sends it under
STATE_KEY, INSTRUCTION_KEY = "states", "task_description"
STATE_DIM, ACTION_DIM = 8, 7
# the benchmark parameter that makes vla-eval's LIBERO send each part (a server asks for them in its HELLO)
SEND_PARAM = {WRIST: "send_wrist_image", STATE_KEY: "send_state"}


def observation_from_wire(payload: Any, cameras: Sequence[str]) -> Observation:
    """The harness's Observation from a received one; ValueError naming what is missing or malformed."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"an observation must be a map, not {type(payload).__name__}")
    images = payload.get("images")
    if not isinstance(images, Mapping):
        raise ValueError("the observation has no 'images' map (camera name -> HxWx3 uint8 image)")
    frames = {}
    for role in cameras:
        key = CAMERA_KEYS[role]
        if key not in images:
            hint = f" (vla-eval's LIBERO sends it with {SEND_PARAM[role]}=true)" if role in SEND_PARAM else ""
            raise ValueError(f"the observation has no image '{key}'{hint}")
        frames[role] = _image(key, images[key])
    state = payload.get(STATE_KEY)
    if state is None:
        raise ValueError(f"the observation has no '{STATE_KEY}' (vla-eval's LIBERO sends it with send_state=true)")
    state = np.asarray(state)
    if state.shape != (STATE_DIM,) or state.dtype.kind not in "iuf" or not np.isfinite(state).all():
        raise ValueError(f"'{STATE_KEY}' must be {STATE_DIM} finite numbers [eef position, axis-angle, gripper "
                         f"joints], not {state.dtype} of shape {list(state.shape)}")
    instruction = payload.get(INSTRUCTION_KEY)
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"the observation has no '{INSTRUCTION_KEY}' (the task's instruction)")
    return Observation(frames, state.astype(np.float64), instruction)


def _image(key: str, image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"image '{key}' must be HxWx3 uint8, not {image.dtype} of shape {list(image.shape)}")
    return image


def observation_to_wire(obs: Observation, antipodal: bool) -> dict:
    """What our remote policy sends: every camera the observation holds, its state (`antipodal`: in vla-eval's
    default convention, for a server that did not ask `quat_no_antipodal`) and instruction."""
    state = antipodal_state(obs.state) if antipodal else np.asarray(obs.state, dtype=np.float64)
    return {"images": {CAMERA_KEYS[role]: np.ascontiguousarray(image) for role, image in obs.images.items()},
            INSTRUCTION_KEY: obs.instruction, STATE_KEY: state}


def antipodal_state(state: np.ndarray) -> np.ndarray:
    """The state with its axis-angle as vla-eval's LIBERO sends it by default (vla_eval.rotation.quat_to_axisangle):
    the quaternion's antipode when its w < 0, i.e. an angle theta > pi becomes 2 pi - theta about the opposite
    axis; float32 like theirs. Equal to theirs to float32 rounding."""
    out = np.array(state, dtype=np.float64)
    rotation = out[3:6]
    angle = float(np.linalg.norm(rotation))
    if angle > math.pi:
        rotation = -rotation / angle * (2 * math.pi - angle)
    out[3:6] = rotation.astype(np.float32)
    return out


def actions_from_reply(reply: Any) -> np.ndarray:
    """[n, 7] float64 env actions from an ACTION payload (`actions`, or vla-eval's alias `action`: one action or a
    chunk); ValueError when it holds none."""
    if not isinstance(reply, Mapping) or ("actions" not in reply and "action" not in reply):
        raise ValueError(f"the reply holds no 'actions' (got {sorted(reply) if isinstance(reply, Mapping) else reply})")
    actions = np.asarray(reply.get("actions", reply.get("action")), dtype=np.float64)
    actions = actions[None] if actions.ndim == 1 else actions
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
        raise ValueError(f"the reply's actions have shape {list(actions.shape)}, not ({ACTION_DIM},) or "
                         f"(n, {ACTION_DIM}) [dx, dy, dz, axis-angle, gripper]")
    return actions


def action_reply(action: np.ndarray) -> dict:
    """The ACTION payload for one env action. Under `action`, vla-eval's alias that every one of its benchmarks
    reads: PredictModelServer casts `actions` to float32, and the harness executes the float64 the model computed."""
    return {"action": np.asarray(action, dtype=np.float64)}


def specs(cameras: Sequence[str]) -> tuple[dict, dict]:
    """(action spec, observation spec) of a policy reading `cameras` and the state, in vla-eval's LIBERO names:
    what our server declares and what our remote policy holds a server's declaration to."""
    from vla_eval.specs import (GRIPPER_CLOSE_POS, IMAGE_RGB, LANGUAGE, POSITION_DELTA, ROTATION_AA,
                                STATE_EEF_POS_AA_GRIP)

    action = {"position": POSITION_DELTA, "rotation": ROTATION_AA, "gripper": GRIPPER_CLOSE_POS}
    observation = {**{CAMERA_KEYS[role]: IMAGE_RGB for role in cameras}, "state": STATE_EEF_POS_AA_GRIP,
                   "language": LANGUAGE}
    return action, observation
