"""The model a command runs when it names none: the paper's OpenVLA on a machine with CUDA, the CPU default elsewhere.

`python -m evaluate suite=libero_long pruner=vla keep=0.125` typed on a GPU node is meant to evaluate OpenVLA with
the official checkpoint of libero_long, not a random tiny model. So when a command's policy runs a model
(`PolicyEntry.uses_model`) and neither the command nor its experiment preset names one, the CLI adds
`model=CUDA_DEFAULT_MODEL` where CUDA is, and keeps configs/config.yaml's default (the CPU default: one value, in
that file's defaults list) where it is not. It says which in one line at start and records it as `model_choice`
(config.yaml, summary.json; not part of a run's identity, which holds the model itself). The choice is made once
per command, on the machine that runs it, so every point of a sweep gets the same model; a cluster sweep
submitted from a login node without a GPU should name its model.
"""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from evaluate.config import CONFIG_DIR, ConfigError, hydra_error_line
from evaluate.preflight import command_points

CUDA_DEFAULT_MODEL = "openvla"  # its official checkpoint per suite: configs/model/openvla.yaml
REASONS = {"cuda_default": "CUDA is available: the paper's OpenVLA with the official checkpoint of the suite",
           "cpu_default": "no CUDA GPU here: the CPU default"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def configured_default(group: str) -> str:
    """The option configs/config.yaml's defaults list picks for `group`."""
    for entry in OmegaConf.load(CONFIG_DIR / "config.yaml").defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            if group in entry:
                return str(entry[group])
    raise KeyError(f"configs/config.yaml has no default for group {group}")


def _key(arg: str) -> str:
    return arg.lstrip("+~").partition("=")[0]


def choose_model(args: list[str], policies: dict) -> tuple[list[str], str | None]:
    """`args` with the machine's model added, and the line that says which; `args` unchanged (and None) when the
    command names a model, its experiment preset does, or none of its points runs a policy with a model."""
    if any(_key(a) == "model" for a in args):
        return args, None
    points = command_points(args)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            config = compose(config_name="config", overrides=points[0], return_hydra_config=True)
        except HydraException as e:  # the same one line the preflight gives for it
            raise ConfigError(hydra_error_line(e)) from None
    choices = config.hydra.runtime.choices
    named = {a.partition("=")[2] for point in points for a in point if _key(a) == "policy"}
    if not any(policies[p].uses_model for p in named or {choices.policy} if p in policies):
        return args, None
    if choices.model != configured_default("model"):  # the experiment preset named it
        return args, None
    choice = "cuda_default" if cuda_available() else "cpu_default"
    model = CUDA_DEFAULT_MODEL if choice == "cuda_default" else choices.model
    added = [f"model={model}"] * (choice == "cuda_default") + [f"model_choice={choice}"]
    return [*args, *added], f"model: {model} ({REASONS[choice]}; model=NAME runs another)"
