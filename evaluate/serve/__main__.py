"""`python -m evaluate.serve [overrides]`: serve a policy of the harness over vla-eval's model-server protocol.

The model, pruner and checkpoint options, their checks and the machine's default model are `python -m evaluate`'s
(plus the server's own options, configs/serve.yaml). Every check, the address included, runs before any weights
load, and the policy is built before the socket opens, so a server that cannot load never listens: a mistake is one
`error:` line. The served episodes go to a run directory (evaluate/serve/records.py) under `runs/served` unless the
command names output_root or output_dir. Ctrl-C or SIGTERM stops the server; its records stay.
"""
from __future__ import annotations

from evaluate.interrupt import Stopped, stop_on_signals

if __name__ == "__main__":  # before the seconds of imports below
    stop_on_signals()

import logging
import signal
import sys
if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # anyio's dependency there
from dataclasses import fields

from omegaconf import DictConfig

from evaluate.config import ConfigError, EvalConfig
from evaluate.serve.options import ServeOptions, check_port, split_options

SERVED_ROOT = "runs/served"
# what the client chooses (which episodes, how they start, what they record): a changed one would mean nothing here
CLIENT_SETTINGS = ("tasks", "expected_tasks", "episodes_per_task", "placement_seed", "instruction",
                   "instruction_from_task", "video", "record_demos", "num_envs")
NOT_SERVABLE = {"scripted": "the scripted expert reads the live simulator, which a server does not have",
                "remote": "it is a client of a server already"}


def checked_config(args: list[str]) -> tuple[ServeOptions, DictConfig]:
    """The server's options and the evaluation config of a command line, every check done; ConfigError (or a
    StoreError for the records directory) in one line."""
    if any(a.startswith("-") for a in args):
        raise ConfigError(f"{next(a for a in args if a.startswith('-'))}: python -m evaluate.serve takes key=value "
                          "overrides only (one server; no sweeps); docs/serving.md")
    options, overrides = split_options(args)
    try:
        import vla_eval  # noqa: F401
    except ImportError:
        raise ConfigError("vla-eval is not installed: pip install -e '.[serve]' (scripts/setup.sh installs it)") from None
    from evaluate.__main__ import policies
    from evaluate.model_choice import choose_model
    from evaluate.preflight import check_command

    if not any(a.partition("=")[0] in ("output_root", "output_dir") for a in overrides):
        overrides = [*overrides, f"output_root={SERVED_ROOT}"]
    overrides, choice = choose_model(overrides, policies())
    if choice:
        print(choice, flush=True)
    [cfg] = check_command(overrides, policies())
    if cfg.policy.name in NOT_SERVABLE:
        raise ConfigError(f"policy={cfg.policy.name} cannot be served: {NOT_SERVABLE[cfg.policy.name]}")
    defaults = {f.name: f.default for f in fields(EvalConfig)}
    for key in CLIENT_SETTINGS:
        if cfg[key] != defaults[key]:
            raise ConfigError(f"{key}={cfg[key]}: the client chooses that (the server answers the episodes it is "
                              "sent); leave it out")
    check_port(options)
    return options, cfg


def serve(options: ServeOptions, cfg: DictConfig) -> None:
    """Build the policy, claim the records directory, listen until stopped."""
    import anyio
    from vla_eval import __version__
    from vla_eval.model_servers.serve import serve_async

    from evaluate.policies import build_policy
    from evaluate.serve.records import ServedRecords
    from evaluate.serve.server import HarnessServer, OneLineRequestErrors

    records = ServedRecords(cfg)
    records.check()
    with records.claimed():
        policy = build_policy(cfg)
        server = HarnessServer(cfg, policy, records, max_batch_size=options.max_batch_size,
                               max_wait_time=options.max_wait_time, env_seed=options.env_seed)
        described = policy.describe()
        logging.getLogger("vla_eval.model_servers.serve").addFilter(OneLineRequestErrors())

        async def listen() -> None:
            async with anyio.create_task_group() as group:
                try:
                    port = await group.start(serve_async, server, options.host, options.port)
                except OSError as e:  # taken since the check
                    raise ConfigError(f"cannot listen on {options.host}:{options.port} ({e.strerror or e}); "
                                      "choose another port=N") from None
                url = f"ws://{options.host}:{port}"
                records.start(described, {"url": url, "vla_eval": __version__,
                                          "observation_params": server.get_observation_params(),
                                          "max_batch_size": options.max_batch_size})
                print(f"serving {url} (ready: GET http://{options.host}:{port}/health): {_named(described)}; "
                      f"records: {cfg.output_dir}", flush=True)

        try:
            anyio.run(listen)
        except BaseExceptionGroup as group:  # anyio's task group wraps what ended it
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


def _named(described: dict) -> str:
    pruner = described.get("pruner") or {}
    what = described.get("model", described.get("policy"))
    if pruner:
        what += f", pruner {pruner.get('name')} keep {pruner.get('keep')}"
    return what + (f" on {described['device']}" if "device" in described else "")


def main(args: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("vla_eval", "evaluate"):  # connections, episodes, a client's mistakes
        logging.getLogger(name).setLevel(logging.INFO)
    from evaluate.__main__ import user_errors

    try:
        options, cfg = checked_config(args)
        serve(options, cfg)
    except user_errors() as e:
        sys.exit(f"error: {e}")
    except Stopped as e:
        print(f"stopped by {signal.Signals(e.signum).name}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
