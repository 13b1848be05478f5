"""The typed schema Hydra checks a composed config against (`eval_schema`, the first default of configs/config.yaml),
and where the config files are."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
SAMPLED_EPISODES_MAX = 100_000  # with placement_seed: placements drawn by the sampler, seeds placement_seed + 0..N-1


@dataclass
class SuiteConfig:
    name: str = MISSING
    max_steps: int = MISSING


@dataclass
class PolicyConfig:
    name: str = MISSING
    label: str = MISSING
    action_noise: float = 0.0  # std of the noise the scripted expert adds to its moving actions (DART demonstrations)


@dataclass
class RemotePolicyConfig(PolicyConfig):
    """`policy=remote`'s own fields (configs/policy/remote.yaml extends this schema): the other policies' runs keep
    identities without them."""

    url: str = MISSING  # ws://HOST:PORT of a vla-eval model server
    timeout_s: float = 300.0  # the longest wait for one reply


@dataclass
class EvalConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    model: Any = MISSING  # each model family has its own fields (configs/model/*.yaml)
    pruner: Any = MISSING  # each pruner has its own options (configs/pruner/*.yaml)
    keep: float = 1.0
    seed: int = 7
    episodes_per_task: int = 50
    tasks: Optional[list[int]] = None
    expected_tasks: Optional[list[int]] = None
    device: str = "auto"
    video: bool = False
    record_demos: bool = False
    placement_seed: Optional[int] = None
    instruction: Optional[str] = None  # the policy is told this instead of each task's own (evaluate/instructions.py)
    instruction_from_task: Optional[int] = None  # ... or task J's instruction
    model_choice: Optional[str] = None  # set by the CLI when the machine chose the model (evaluate/model_choice.py)
    num_envs: int = 1
    worker_timeout_s: float = 600.0
    output_root: str = "runs"
    run_name: str = MISSING
    output_dir: str = MISSING


ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
ConfigStore.instance().store(name="remote_policy_schema", node=RemotePolicyConfig)
