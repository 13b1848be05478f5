"""Train the project's small OpenVLA-OFT on demonstrations by behaviour cloning, and save it in the official OFT
checkpoint layout (`model=openvla_oft model.checkpoint=OUT` loads it unchanged; `model=openvla_oft_small` is the one
trained this way and shipped with the project).

The architecture is the seeded tiny model's (fused DINOv2 + SigLIP ViTs of depth 3, an 8-layer Llama of width 128,
the Llama-2 id layout) with OFT's parts (proprio projector, L1 regression head over 8-step chunks); the recipe is
OFT's: both cameras and the proprio token, one bidirectional pass, L1 loss on normalised chunks, a random crop of
90% of the area (evaluation takes the centre crop). Dataset statistics (q01/q99) come from the demonstrations and are
stored under `{suite}_no_noops` of their base suite (`libero_object` for `libero_object_lan`), as the official
checkpoints store theirs.

    python scripts/train_policy.py --demos runs/scripted/libero_object/none-keep1.0/seed7-placements100000/demos \\
        --out vla_pruner/checkpoints/openvla_oft_small

Continuing: `--init DIR` starts from a saved checkpoint's weights (a new warm-up and cosine schedule over --steps);
the saved training.json keeps the whole chain (each stage's command, config and history).

Checked before any preprocessing or weights, each refusal one `error:` line: the flags; --out (replaced whole at
the end, so it must be new, empty or a checkpoint this script wrote, and apart from --work); every demonstration
(readable, complete, finite, of one suite, the same one given twice counted once); the split; a saved state of
other settings or data. Resumable: the training state is saved to --work every --save-every steps and when Ctrl-C
or SIGTERM stops it; the same command continues from it. Seeded: the same demonstrations, flags and thread count
give the same weights.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluate.interrupt import InterruptGuard, Stopped, stop_on_signals

if __name__ == "__main__":  # before the seconds of imports below: an early Ctrl-C gets the one-line stop message
    stop_on_signals()
try:
    import torch

    from evaluate.arguments import CommandParser
    from evaluate.demo_data import DemoSet, build_chunk_data, scan_demos
    from evaluate.demos import DemoFileError
    from evaluate.envs.suites import model_suite
    from evaluate.errors import ConfigError
    from evaluate.policies.openvla_checks import check_family, openvla_families
    from evaluate.envs.vocabulary import every_instruction
    from evaluate.policies.adapter import cache_root
    from evaluate.store import StoreError, check_writable
    from vla_pruner.models.checkpoint import CheckpointError
    from vla_pruner.models.openvla.checkpoint import check_checkpoint_files
    from vla_pruner.models.openvla_oft.family import FAMILY as OFT_FAMILY
    from vla_pruner.models.openvla_oft.model import OpenVLAOFT
    from vla_pruner.models.openvla.processor import ImageProcessor, OpenVLAProcessor, prompt_for
    from vla_pruner.models.openvla.tiny import PREPROCESSOR_CONFIG, build_tokenizer
    from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
    from vla_pruner.training.data import split_episodes
    from vla_pruner.training.loop import (Batcher, NonFiniteLoss, ResumeError, TrainConfig, TrainingStopped,
                                          saved_state, train)
    from vla_pruner.training.model import new_oft_model, save_oft_checkpoint
    from vla_pruner.training.statistics import dataset_statistics
except Stopped as stop:  # the module half imported: nothing to save, the same line as a later stop
    sys.exit(f"error: stopped by {signal.Signals(stop.signum).name} before the first step; re-run the same command "
             "to resume")

# the small policy's architecture: the tiny model's (see module docstring), trained instead of random
SMALL_CONFIG = {key: value for key, value in TINY_CONFIG.items() if key != "norm_stats"}
STATE_FILE, LOG_FILE = "train_state.pt", "log.jsonl"
# what a checkpoint of this script holds (training.json always): the only files --out may hold to be replaced
WRITTEN = re.compile(r"(config|dataset_statistics|preprocessor_config|training|tokenizer|tokenizer_config|"
                     r"special_tokens_map|added_tokens)\.json|model\.safetensors|tokenizer\.model|"
                     r"(action_head|proprio_projector)--\d+_checkpoint\.pt")


class Refused(ValueError):
    """--out or --work cannot be used as given."""


REFUSED = (ValueError, OSError, CheckpointError, StoreError)  # ConfigError, DemoFileError, ResumeError among them
# what can still go wrong once the checks passed (a file changed meanwhile, a loss gone nan, a full disk)
FAILED = (Refused, NonFiniteLoss, ResumeError, DemoFileError, CheckpointError, StoreError, OSError)


def parse_args(argv: list[str] | None = None):
    p = CommandParser(prog="train_policy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", required=True, nargs="+",
                   help="demonstration files (*_demo.hdf5) or directories of them (e.g. clean and DART ones)")
    p.add_argument("--out", required=True,
                   help="checkpoint directory to write: new, empty or a checkpoint of this script (replaced)")
    p.add_argument("--work", default=None,
                   help="preprocessed frames and the resumable training state (default: under $VLA_PRUNER_CACHE/train, "
                        "the state keyed by the resolved --out and the demonstrations)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--validation", type=int, default=10, help="demonstrations held out for the validation loss")
    p.add_argument("--validate-every", type=int, default=TrainConfig.validate_every)
    p.add_argument("--save-every", type=int, default=TrainConfig.save_every)
    p.add_argument("--init", default=None, help="start from this OFT checkpoint's weights (default: a fresh seeded model)")
    p.add_argument("--no-augment", action="store_true", help="train on the centre crop (no random crop)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (a fixed count keeps runs reproducible)")
    p.add_argument("--workers", type=int, default=2, help="processes preprocessing the demonstrations")
    return p.parse_args(argv)


@dataclass
class Plan:
    """Everything a training needs, checked: what `prepare` returns before any preprocessing or weights."""

    cfg: TrainConfig
    out: Path
    frames_dir: Path  # the preprocessed demos (content-keyed, so shareable)
    state_dir: Path  # the resumable state and the log
    demos: DemoSet
    suite: str  # the demonstrations' base suite: the statistics key
    train_episodes: list[int]
    val_episodes: list[int]
    data: dict  # what identifies the demonstrations and the split (recorded in the state)
    init: dict | None


def prepare(args) -> Plan:
    """Every check that needs no preprocessing and no weights; the first failure raises (one line)."""
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      validate_every=args.validate_every, save_every=args.save_every,
                      augment=not args.no_augment, threads=args.threads,
                      init=str(Path(args.init).resolve()) if args.init else "")
    for flag, value in (("--threads", args.threads), ("--workers", args.workers)):
        if value < 1:
            raise ValueError(f"{flag}={value} must be at least 1")
    out = Path(args.out).expanduser().resolve()
    check_out(out)
    init = _init_training(args.init) if args.init else None
    demos = scan_demos(args.demos)
    suite = base_suite(demos.entries)
    train_episodes, val_episodes = split_episodes(len(demos.entries), args.validation, args.seed)
    steps = sum(int(demos.entries[e]["num_samples"]) for e in train_episodes)
    if cfg.batch_size > steps:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {steps} steps of the training "
                         f"demonstrations; at most {steps}")
    data = {"demos": demos.keys, "validation": [demos.keys[e] for e in val_episodes]}
    if args.work:
        frames_dir = state_dir = Path(args.work).expanduser().resolve()
    else:
        key = hashlib.sha256(json.dumps([str(out), data]).encode()).hexdigest()[:12]
        frames_dir, state_dir = cache_root() / "train" / "frames", cache_root() / "train" / f"{out.name}-{key}"
    for directory in {frames_dir.resolve(), state_dir.resolve()}:
        if directory == out or out in directory.parents or directory in out.parents:
            raise Refused(f"--out {out} and --work {directory} overlap; the checkpoint replaces --out whole, so "
                          "keep the two apart")
    saved_state(state_dir / STATE_FILE, cfg, data, mmap=True)
    return Plan(cfg, out, frames_dir, state_dir, demos, suite, train_episodes.tolist(), val_episodes.tolist(), data,
                init)


def check_out(out: Path) -> None:
    """--out is replaced whole at the end: it must be new, an empty directory or a checkpoint this script wrote (its
    files and nothing else; training.json says it wrote them), never the current directory or one above it."""
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        raise Refused(f"--out {out} is the current directory or one above it; the checkpoint replaces --out whole, "
                      "so give a new or empty directory")
    if out.exists() and not out.is_dir():
        raise Refused(f"--out {out} exists and is not a directory")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    foreign = [name for name in names if not (WRITTEN.fullmatch(name) and (out / name).is_file())]
    if foreign or (names and "training.json" not in names):
        shown = ", ".join((foreign or names)[:4]) + ", ..." * (len(foreign or names) > 4)
        raise Refused(f"--out {out} holds files this script did not write ({shown}); the checkpoint replaces --out "
                      "whole, so give a new or empty directory, or a checkpoint this script wrote")
    check_writable(out.parent if out.exists() else out, "--out DIR")


def base_suite(entries: list[dict]) -> str:
    """The one base suite of the demonstrations (their statistics key is `{suite}_no_noops`, the key a run on the
    suite or on its LIBERO-PRO perturbations looks up); a demo without a suite or of another base suite is refused."""
    suites: dict[str, str] = {}
    for entry in entries:
        where = f"{entry['file']} {entry['name']}"
        if not entry.get("suite"):
            raise DemoFileError(f"{where} records no suite; its statistics would be stored under a key no run looks "
                                "up (record demonstrations with python -m evaluate ... record_demos=true)")
        try:
            suites.setdefault(model_suite(str(entry["suite"])), where)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if len(suites) > 1:
        raise ValueError(f"demonstrations of several suites ({', '.join(f'{s} in {w}' for s, w in suites.items())}); "
                         "one suite's statistics per model: train on one")
    return next(iter(suites))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = None
    try:
        try:
            plan = prepare(args)
        except REFUSED as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return run(plan, args, argv)
    except Stopped as e:
        print(f"error: {_stopped(e.signum, plan)}; re-run the same command to resume", file=sys.stderr)
        return 1
    except FAILED as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _stopped(signum: int, plan: Plan | None) -> str:
    """Where a stop left the training: the step its saved state resumes from."""
    state = None if plan is None else saved_state(plan.state_dir / STATE_FILE, plan.cfg, plan.data, mmap=True)
    where = (f"at step {state['step']} of {plan.cfg.steps} (the state is in {plan.state_dir})" if state
             else "before the first step")
    return f"stopped by {signal.Signals(signum).name} {where}"


def run(plan: Plan, args, argv: list[str] | None) -> int:
    cfg = plan.cfg
    data, provenance = build_chunk_data(plan.demos, plan.frames_dir, args.workers)
    train_episodes, val_episodes = plan.train_episodes, plan.val_episodes
    train_frames, val_frames = data.frames_of(train_episodes), data.frames_of(val_episodes)
    stats_key = f"{plan.suite}_no_noops"
    stats = {stats_key: dataset_statistics(data.actions[train_frames], data.states[train_frames],
                                           len(train_episodes))}
    # a fresh model: every word LIBERO and LIBERO-PRO can give it has a token of its own; continuing: the starting
    # checkpoint's tokenizer (its embedding rows are those words')
    tokenizer = (OpenVLAProcessor.from_pretrained(args.init).tokenizer if args.init
                 else build_tokenizer(every_instruction()))
    processor = ImageProcessor.from_config(PREPROCESSOR_CONFIG)
    batcher = Batcher(data, processor, lambda text: tokenizer(prompt_for(text), return_tensors="pt")["input_ids"],
                      stats[stats_key])
    twice = f" ({plan.demos.duplicates} given twice, used once)" * bool(plan.demos.duplicates)
    print(f"{data.episodes} demonstrations{twice} ({len(data.frames)} steps) of {plan.suite} tasks "
          f"{sorted({d['task_id'] for d in provenance['demos']})}: {len(train_episodes)} train, {len(val_episodes)} "
          f"validation; {cfg.steps} steps of {cfg.batch_size}", flush=True)
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    state_file, log_file = plan.state_dir / STATE_FILE, plan.state_dir / LOG_FILE
    history = _history(log_file, saved_state(state_file, cfg, plan.data, mmap=True))

    def log(entry: dict) -> None:
        history.append(entry)
        with log_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    started = time.monotonic()
    if args.init:
        model = OpenVLAOFT.from_pretrained(args.init, device="cpu", dtype="float32").train()
    else:
        model = new_oft_model(SMALL_CONFIG, args.seed)
    with InterruptGuard() as guard:  # the first Ctrl-C or SIGTERM stops after the step, its state saved
        try:
            model = train(model, batcher, train_frames, val_frames, cfg, state_file, log, plan.data,
                          lambda: guard.requested is not None)
        except TrainingStopped:
            raise Stopped(guard.requested) from None
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.out.name}.", dir=plan.out.parent))
    try:
        checkpoint = staging / "checkpoint"
        save_oft_checkpoint(model, checkpoint, SMALL_CONFIG, stats, cfg.steps)
        tokenizer.save_pretrained(str(checkpoint))
        (checkpoint / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
        (checkpoint / "training.json").write_text(json.dumps({
            "command": "python scripts/train_policy.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "config": asdict(cfg), "validation_demos": int(args.validation), "torch": torch.__version__,
            "demonstrations": {"count": data.episodes, "steps": int(len(data.frames)), "statistics": stats_key,
                               "train": train_episodes, "validation": val_episodes,
                               "sources": provenance["demos"]},
            "history": history,
            "init": plan.init,
            "this_invocation_s": round(time.monotonic() - started, 1),
        }, indent=2))
        replace_checkpoint(checkpoint, plan.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"saved {plan.out} (final validation L1 {history[-1]['val_loss'] if history else float('nan'):.4f})")
    return 0


def _history(log_file: Path, state: dict | None) -> list[dict]:
    """The validations logged up to the saved state's step (a fresh training starts an empty log): a resumed run
    logs the later ones again."""
    step = state["step"] if state else 0
    entries = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
    kept = [entry for entry in entries if entry["step"] <= step]
    log_file.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
    return kept


def replace_checkpoint(checkpoint: Path, out: Path) -> None:
    """`checkpoint` (beside `out`) becomes `out`; what was there, checked again to be empty or a checkpoint of this
    script, is removed only once the new one is in place."""
    check_out(out)
    if not out.is_dir() or not any(out.iterdir()):
        checkpoint.replace(out)  # onto nothing, or onto an empty directory
        return
    old = checkpoint.with_name("replaced")
    out.rename(old)
    checkpoint.rename(out)
    shutil.rmtree(old)


def _init_training(init: str) -> dict:
    """The starting checkpoint, checked before any preprocessing as a run checks one (its files, its family: an
    OpenVLA-OFT) and against the small policy's architecture; with how it was trained (its training.json)."""
    directory = Path(init)
    _, raw = check_checkpoint_files(directory)
    check_family(directory, OFT_FAMILY, openvla_families(), parts_pending=False)
    mismatched = sorted(k for k, v in SMALL_CONFIG.items() if raw.get(k) != v)
    if mismatched:
        raise ValueError(f"--init {init} is not a checkpoint of the small policy's architecture "
                         f"(config.json differs in {', '.join(mismatched[:5])})")
    history = directory / "training.json"
    return {"checkpoint": str(directory.resolve()),
            "training": json.loads(history.read_text()) if history.is_file() else None}


if __name__ == "__main__":
    sys.exit(main())
