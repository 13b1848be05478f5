"""Every run a command line asks for, checked before any of them starts.

A sweep (`-m keep=0.5,2.0`) is expanded into its points exactly as Hydra's basic sweeper does, and each
point's composed config gets the same checks a single run gets (values, pruner options, checkpoint files,
output directory), so one bad point stops the sweep before anything runs or any weights load.
"""
from __future__ import annotations

from functools import lru_cache

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from evaluate.config import CONFIG_DIR, ConfigError, check_group_overrides, hydra_error_line, validate
from evaluate.envs.suites import REFUSED_SUITES, suite_info
from evaluate.store import check_writable

_CHECKED: set[tuple[str, ...]] = set()  # the points (app overrides) this process checked, in full


def command_points(args: list[str]) -> list[list[str]]:
    """The overrides of each run `python -m evaluate ARGS` starts (Hydra's own keys included: they are checked too)."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    if not any(a in ("-m", "--multirun") for a in args):
        return [overrides]
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]


def check_command(args: list[str], policies: dict) -> list[DictConfig]:
    """Each point's composed config; raise the first point's error (one line), naming the point when there
    are several."""
    check_group_overrides(args, {"suite": REFUSED_SUITES})
    return check_points(command_points(args), policies)


def check_points(points: list[list[str]], policies: dict, writable: bool = True,
                 what: str = "sweep point") -> list[DictConfig]:
    """The composed config of each list of overrides, checked as a run is (`writable`: and its output directory);
    the first error in one line, naming its point (`what` it is) when there are several."""
    configs = []
    hydra_checked: set[tuple[str, ...]] = set()
    composed: dict[tuple[str, ...], DictConfig] = {}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for point in points:
            hydra_keys = tuple(o for o in point if o.lstrip("+~").startswith("hydra"))
            try:
                if hydra_keys not in hydra_checked:  # Hydra's own keys (launcher, ...): usually every point's
                    compose(config_name="config", overrides=point, return_hydra_config=True)
                    hydra_checked.add(hydra_keys)
                cfg = _composed(point, hydra_keys, composed)
                validate(cfg, policies)
                check_expected_tasks(cfg)
                if writable:
                    check_writable(cfg.output_dir)
                    _CHECKED.add(tuple(o for o in point if o not in hydra_keys))
                configs.append(cfg)
            except ConfigError as e:
                raise type(e)(_named(e, point, len(points), what)) from None
            except Exception as e:  # Hydra's own messages for bad keys or values
                if type(e).__module__.split(".")[0] not in ("hydra", "omegaconf", "evaluate"):
                    raise
                raise ConfigError(_named(hydra_error_line(e), point, len(points), what)) from None
    return configs


def checked_here(cfg: DictConfig) -> bool:
    """Whether this process checked the run of `cfg` (Hydra's composition of a point, its `hydra` node set) before
    any run started: then the run does not check it again."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and tuple(HydraConfig.get().overrides.task) in _CHECKED


SHARD_KEYS = ("tasks=", "expected_tasks=")


def _composed(point: list[str], hydra_keys: tuple[str, ...], cache: dict) -> DictConfig:
    """The point's config without Hydra's own keys. Task shards of one experiment (a sweep's hundreds of points)
    differ in their task lists only: the rest is composed once, and each shard's lists are set on a copy (through
    the typed schema, as a composition sets them)."""
    shard = [o for o in point if o.startswith(SHARD_KEYS)]
    rest = tuple(o for o in point if o not in hydra_keys and o not in shard)
    if rest not in cache:
        cache[rest] = compose(config_name="config", overrides=list(rest))
    cfg = cache[rest].copy()
    for text in shard:
        key, value = _parsed(text)
        cfg[key] = value
    return cfg


@lru_cache(maxsize=None)
def _parsed(override: str) -> tuple[str, object]:
    """(key, value) of a plain override (Hydra's grammar is slow, and every shard repeats its expected_tasks)."""
    [parsed] = OverridesParser.create().parse_overrides([override])
    return parsed.key_or_group, parsed.value()


def _named(error, point: list[str], n_points: int, what: str) -> str:
    return f"{error} ({what}: {' '.join(point)})" if n_points > 1 else str(error)


def check_expected_tasks(cfg: DictConfig) -> None:
    """`expected_tasks` lists every shard's tasks, this one's included: one that leaves out the tasks this run
    runs would make the directory `complete` before its episodes are."""
    if cfg.expected_tasks is None:
        return
    runs = range(suite_info(cfg.suite.name).tasks) if cfg.tasks is None else cfg.tasks
    missing = sorted(set(runs) - set(cfg.expected_tasks))
    if missing:
        raise ConfigError(f"expected_tasks={list(cfg.expected_tasks)} leaves out task(s) {missing} that tasks runs; "
                          f"list every shard's tasks, this one's included")
