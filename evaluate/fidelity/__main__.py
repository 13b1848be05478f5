"""`python -m evaluate.fidelity source=PATH [model=...] [pruners=[...]] [keeps=[...]] [out=DIR] [episodes=N]
[frames=N]`: replay recorded demos through the dense model and every pruner setting (see docs/fidelity.md, "Offline
fidelity"). Bad input is one `error:` line before any weights load."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from evaluate.config import ConfigError
from evaluate.fidelity.config import check_settings, parse_args
from evaluate.fidelity.sources import demo_entries
from evaluate.store import StoreError, check_writable


def user_errors() -> tuple[type[BaseException], ...]:
    from vla_pruner.models.checkpoint import CheckpointError

    return (ConfigError, StoreError, CheckpointError)


def main(argv: list[str]) -> None:
    from evaluate.policies import POLICIES, build_policy

    try:
        args = parse_args(argv)
        entries, suite = demo_entries(args.source, args.episodes)
        dense_cfg, settings = check_settings(args, suite, POLICIES)
        out = args.out or Path("fidelity") / dense_cfg.model.name / suite
        check_writable(out)
        identity = replay_identity(args, dense_cfg, suite, len(entries), settings)
        check_out(out, identity)
        started = time.monotonic()
        policy = build_policy(dense_cfg)  # weights load here, once
    except user_errors() as e:
        sys.exit(f"error: {e}")
    from evaluate.fidelity.outputs import write_outputs
    from evaluate.fidelity.replay import replay

    frames = sum(min(int(e.get("num_samples", 0)), args.frames or sys.maxsize) for e in entries)
    with tqdm(total=frames, unit="frame", desc=f"fidelity {dense_cfg.model.name}", dynamic_ncols=True) as bar:
        replayed = replay(policy, POLICIES["vla"].prepare, dense_cfg, settings, entries, args.frames, bar.update)
    every = int(replayed.frame().executed.max())
    caption = (f"Offline fidelity of {dense_cfg.model.name} on {suite}: {len(entries)} demo(s) from {args.source}"
               f"{f', first {args.frames} frames each' if args.frames else ''}, a query every {every} frame(s) "
               "as a rollout queries")
    title = f"{dense_cfg.model.name}, {suite}: {len(entries)} demo(s), a query every {every} frame(s)"
    table, paths = write_outputs(replayed, identity["model"], suite, out, caption, title)
    meta = {**identity, "query_every": every, "policy": policy.describe(),
            "wall_time_s": round(time.monotonic() - started, 1)}
    (out / "fidelity.json").write_text(json.dumps(meta, indent=2, default=str))
    shown = ["pruner", "keep", "queries", "action_l1", "action_l1_p90", "gripper_agreement", "prefill_tmacs"]
    print(table[shown].to_string(index=False))
    print(f"{meta['wall_time_s']} s; wrote", *paths, out / "fidelity.json", sep="\n  ")


def replay_identity(args, dense_cfg, suite: str, demos: int, settings) -> dict:
    """What makes a replay's results what they are (fidelity.json records it)."""
    return {"model": OmegaConf.to_container(dense_cfg.model, resolve=True), "suite": suite, "source": str(args.source),
            "demos": demos, "frames_per_demo": args.frames, "seed": dense_cfg.seed,
            "settings": [{"pruner": s.pruner, "keep": s.keep, "told": s.told} for s in settings]}


def check_out(out: Path, identity: dict) -> None:
    """A replay's tables replace only those of the same replay run again (its fidelity.json says so), never another
    replay's results."""
    if not (out / "fidelity.csv").is_file():
        return
    try:
        earlier = json.loads((out / "fidelity.json").read_text())
    except (OSError, ValueError):
        earlier = {}
    differ = [key for key in identity if not isinstance(earlier, dict) or earlier.get(key) != identity[key]]
    if differ:
        raise ConfigError(f"out={out} holds the results of another replay (its {', '.join(differ)} differ); give "
                          "another out= or remove its fidelity.* files")


if __name__ == "__main__":
    main(sys.argv[1:])
