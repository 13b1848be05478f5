"""Every run a command line asks for, checked before any of them starts.

A sweep (`-m keep=0.5,2.0`) is expanded into its points exactly as Hydra's basic sweeper does, and each
point's composed config gets the same checks a single run gets (values, pruner options, checkpoint files,
output directory), so one bad point stops the sweep before anything runs or any weights load.
"""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from evaluate.config import CONFIG_DIR, ConfigError, validate
from evaluate.store import check_writable


def command_points(args: list[str]) -> list[list[str]]:
    """The config overrides of each run `python -m evaluate ARGS` starts (Hydra's own keys left out)."""
    overrides = [a for a in args if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    if not any(a in ("-m", "--multirun") for a in args):
        return [overrides]
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]


def check_command(args: list[str], policies: dict) -> list[DictConfig]:
    """Each point's composed config; raise the first point's error (one line), naming the point when there
    are several."""
    return check_points(command_points(args), policies)


def check_points(points: list[list[str]], policies: dict, writable: bool = True,
                 what: str = "sweep point") -> list[DictConfig]:
    """The composed config of each list of overrides, checked as a run is (`writable`: and its output directory);
    the first error in one line, naming its point (`what` it is) when there are several."""
    configs = []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for point in points:
            try:
                cfg = compose(config_name="config", overrides=point)
                validate(cfg, policies)
                if writable:
                    check_writable(cfg.output_dir)
                configs.append(cfg)
            except ConfigError as e:
                raise type(e)(_named(e, point, len(points), what)) from None
            except Exception as e:  # Hydra's own messages for bad keys or values
                if type(e).__module__.split(".")[0] not in ("hydra", "omegaconf", "evaluate"):
                    raise
                raise ConfigError(_named(_first_line(e), point, len(points), what)) from None
    return configs


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _named(error, point: list[str], n_points: int, what: str) -> str:
    return f"{error} ({what}: {' '.join(point)})" if n_points > 1 else str(error)
