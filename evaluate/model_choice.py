"""The model a command runs when it names none: the paper's OpenVLA on a machine with CUDA, the CPU default elsewhere.

`python -m evaluate suite=libero_long pruner=vla keep=0.125` typed on a GPU node is meant to evaluate OpenVLA with
the official checkpoint of libero_long, not a random tiny model. So when a command's policy runs a model
(`PolicyEntry.uses_model`) and neither the command nor its experiment preset names one, the CLI adds
`model=CUDA_DEFAULT_MODEL` where CUDA is, and `CPU_DEFAULT_MODEL` (the policy trained here) where it is not, or, on
a suite that policy has no checkpoint for, `CPU_FALLBACK_MODEL`. It says which in one line at start and records it as `model_choice`
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
# Without CUDA: the policy trained here, on the suites it has a checkpoint for (configs/model/openvla_oft_small.yaml
# `checkpoints`); on any other suite the seeded random model of the same family, which has every suite's statistics
CPU_DEFAULT_MODEL = "openvla_oft_small"
CPU_FALLBACK_MODEL = "openvla_oft_tiny"
REASONS = {"cuda_default": "CUDA is available: the paper's OpenVLA with the official checkpoint of the suite",
           "cpu_default": "no CUDA GPU here: the CPU default",
           "cpu_fallback": "no CUDA GPU here, and the CPU default {default} was trained on {trained} only: the "
                           "seeded random model, whose success means nothing"}


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
    command names a model, its experiment preset does, or none of its points runs a policy with a model. A typed
    `model_choice` is refused: it records what the machine chose, so a typed one would record a choice never made."""
    typed = [a for a in args if _key(a) == "model_choice"]
    if typed:
        raise ConfigError(f"{typed[0]}: model_choice is set by python -m evaluate when the machine chooses the model "
                          f"({', '.join(REASONS)}), not an option; name the model with model=NAME")
    if any(_key(a) == "model" for a in args) or any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return args, None  # named, or a Hydra flag (--help, --cfg, ...): no run, nothing to choose
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
    from evaluate.envs.suites import model_suite

    trained = list(OmegaConf.load(CONFIG_DIR / "model" / f"{CPU_DEFAULT_MODEL}.yaml").checkpoints)
    if cuda_available():
        choice, model = "cuda_default", CUDA_DEFAULT_MODEL
    elif model_suite(config.suite.name) in trained:
        choice, model = "cpu_default", CPU_DEFAULT_MODEL
    else:
        choice, model = "cpu_fallback", CPU_FALLBACK_MODEL
    added = [f"model={model}"] * (model != choices.model) + [f"model_choice={choice}"]
    reason = REASONS[choice].format(default=CPU_DEFAULT_MODEL, trained=", ".join(trained))
    return [*args, *added], f"model: {model} ({reason}; model=NAME runs another)"
