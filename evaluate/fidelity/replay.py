"""The replay: every demo in order, each frame a rollout would query prepared once and answered by the dense model
and by every setting, each in a policy slot of its own.

The policy is the one `python -m evaluate` builds (weights load once), so preprocessing, the query path and the
un-normalisation are the rollout's. A slot keeps its own pruner for the whole replay, reset per episode as a
rollout resets it, so VLA-Pruner's action history and VLA-Cache's stored keys/values carry from query to query
within an episode exactly as in a rollout; pi0's slots draw their noise from the same per-episode generator, so
dense and pruned sample from the same noise at every query. Every query runs alone (batch size 1, the rollout's
and the paper's convention; a batch is only equal to within float rounding), so a setting that runs the dense
computation (pruner none, any pruner at keep 1.0) gives exactly the dense actions.

Which frames: a rollout queries, executes the returned actions, and queries again, so the replay queries frame 0
and then the frame after the executed actions: every frame for OpenVLA, every 8th for OpenVLA-OFT, every
`model.replan_steps`-th for pi0. The demo's actions over the executed steps are the expert's, the scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Callable

import pandas as pd
from omegaconf import DictConfig

from evaluate.demos import demo_observations, read_demo
from evaluate.fidelity.config import Setting
from evaluate.fidelity.measures import compare
from evaluate.policy import EpisodeContext
from evaluate.store import EpisodeRecord

# the dense reference's key (slot 0, the policy's own dense pruner); a listed `none` setting is a slot of its own
REFERENCE = Setting("dense", 1.0)


@dataclass
class Replayed:
    """Per (setting, query) the measures (`queries`), and per setting its queries' records for the cost tables."""

    queries: list[dict] = field(default_factory=list)
    records: dict[Setting, list[EpisodeRecord]] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.queries)


def replay(policy, prepare: Callable, dense_cfg: DictConfig, settings: dict[Setting, DictConfig],
           entries: list[dict], frames: int | None, advance: Callable[[int], None]) -> Replayed:
    """Replay `entries` (evaluate.fidelity.sources) through `policy` (built from `dense_cfg`: slot 0) and a slot per
    setting; `advance(n)` is told of every n frames done."""
    pruners = {s: policy.make_pruner(cfg.pruner, cfg.keep) for s, cfg in settings.items()}
    slots = {REFERENCE: 0, **{s: i for i, s in enumerate(settings, 1)}}
    out = Replayed(records={s: [] for s in slots})
    for episode, entry in enumerate(entries):
        demo = read_demo(entry)
        ctx = EpisodeContext(entry["suite"], entry["task_id"], entry["instruction"], entry["init_index"],
                             dense_cfg.seed)
        for setting, slot in slots.items():  # a told setting's slot gets its own prompt
            told = ctx if setting.told is None else replace(ctx, instruction=setting.told)
            policy.reset_slot(slot, told, pruner=pruners.get(setting))
            out.records[setting].append(EpisodeRecord(ctx.suite, ctx.task_id, ctx.instruction, ctx.init_index,
                                                      success=False, steps=0, wall_time_s=0.0))
        observations = list(islice(demo_observations(demo), frames))
        step = 0
        while step < len(observations):
            obs = observations[step]
            prepared = prepare(dense_cfg, obs)
            dense = policy.act_batch([(0, prepared)], prepared=True)[0]
            executed = len(dense.actions)
            expert = policy.normalize_actions(demo["actions"][step:step + executed], obs)
            for setting, slot in slots.items():
                answer = dense if slot == 0 else policy.act_batch([(slot, prepared)], prepared=True)[0]
                out.records[setting][-1].queries.append(answer.info)
                out.queries.append({"pruner": setting.pruner, "keep": setting.keep, "told": setting.told,
                                    "episode": episode,
                                    "task_id": ctx.task_id, "init_index": ctx.init_index, "step": step,
                                    **compare(dense, answer, expert)})
            advance(min(executed, len(observations) - step))
            step += executed
        for records in out.records.values():
            records[-1].steps = len(observations)
    return out
