"""The server's own options (configs/serve.yaml), split from the evaluation overrides a serve command also takes."""
from __future__ import annotations

import socket
from dataclasses import dataclass, fields

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from evaluate.config import CONFIG_DIR, ConfigError, hydra_error_line


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 1
    max_wait_time: float = 0.01
    env_seed: int = 0


OPTION_KEYS = {f.name for f in fields(ServeOptions)}


def split_options(args: list[str]) -> tuple[ServeOptions, list[str]]:
    """(the server's options, the evaluation overrides) of a command line; ConfigError in one line for a bad value."""
    own = [a for a in args if a.partition("=")[0] in OPTION_KEYS]
    merged = OmegaConf.merge(OmegaConf.structured(ServeOptions), OmegaConf.load(CONFIG_DIR / "serve.yaml"))
    for text, override in zip(own, OverridesParser.create().parse_overrides(own) if own else []):
        try:
            merged = OmegaConf.merge(merged, {override.key_or_group: override.value()})
        except Exception as e:  # OmegaConf's message for a value of the wrong type
            kind = ServeOptions.__dataclass_fields__[override.key_or_group].type
            raise ConfigError(f"{text}: {override.key_or_group} must be of type {kind} "
                              f"({hydra_error_line(e).split(';')[0]})") from None
    options = ServeOptions(**OmegaConf.to_container(merged))
    check_options(options)
    return options, [a for a in args if a not in own]


def check_options(options: ServeOptions) -> None:
    if not 0 <= options.port <= 65535:
        raise ConfigError(f"port={options.port} must be in 0..65535 (0: any free port)")
    if options.max_batch_size < 1:
        raise ConfigError(f"max_batch_size={options.max_batch_size} must be at least 1")
    if options.max_wait_time < 0:
        raise ConfigError(f"max_wait_time={options.max_wait_time} must be at least 0 (seconds)")
    if options.env_seed < 0:
        raise ConfigError(f"env_seed={options.env_seed} must be at least 0")


def check_port(options: ServeOptions) -> None:
    """Fail before any weights load when the address cannot be listened on (in use, not this machine's)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
            probe.bind((options.host, options.port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {options.host}:{options.port} ({e.strerror or e}); choose another "
                          "port=N (0: any free port) or host=...") from None
