"""Train the project's small OpenVLA-OFT on demonstrations by behaviour cloning, and save it in the official OFT
checkpoint layout (`model=openvla_oft model.checkpoint=OUT` loads it unchanged; `model=openvla_oft_small` is the one
trained this way and shipped with the project).

The architecture is the seeded tiny model's (fused DINOv2 + SigLIP ViTs of depth 3, an 8-layer Llama of width 128,
the Llama-2 id layout) with OFT's parts (proprio projector, L1 regression head over 8-step chunks); the recipe is
OFT's: both cameras and the proprio token, one bidirectional pass, L1 loss on normalised chunks, a random crop of
90% of the area (evaluation takes the centre crop). Dataset statistics (q01/q99) come from the demonstrations and are
stored under `{suite}_no_noops`, as the official checkpoints store theirs.

    python scripts/train_policy.py --demos runs/scripted/libero_object/none-keep1.0/seed7-placements100000/demos \\
        --out vla_pruner/checkpoints/openvla_oft_small

Continuing: `--init DIR` starts from a saved checkpoint's weights (a new warm-up and cosine schedule over --steps);
the saved training.json keeps the whole chain (each stage's command, config and history).

Resumable: the training state is saved to --work every --save-every steps; the same command continues from it.
Seeded: the same demonstrations, flags and thread count give the same weights.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from evaluate.demo_data import build_chunk_data
from evaluate.policies.vla_checks import check_family
from evaluate.envs.vocabulary import every_instruction
from evaluate.policies.vla_model import cache_root
from vla_pruner.families import family_names, model_family
from vla_pruner.models.checkpoint import CheckpointError
from vla_pruner.models.openvla.checkpoint import check_checkpoint_files
from vla_pruner.models.openvla_oft.family import FAMILY as OFT_FAMILY
from vla_pruner.models.openvla_oft.model import OpenVLAOFT
from vla_pruner.models.openvla.processor import ImageProcessor, OpenVLAProcessor, prompt_for
from vla_pruner.models.openvla.tiny import PREPROCESSOR_CONFIG, build_tokenizer
from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
from vla_pruner.training.data import split_episodes
from vla_pruner.training.loop import Batcher, TrainConfig, train
from vla_pruner.training.model import new_oft_model, save_oft_checkpoint
from vla_pruner.training.statistics import dataset_statistics

# the small policy's architecture: the tiny model's (see module docstring), trained instead of random
SMALL_CONFIG = {key: value for key, value in TINY_CONFIG.items() if key != "norm_stats"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="train_policy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", required=True, nargs="+",
                   help="demonstration files (*_demo.hdf5) or directories of them (e.g. clean and DART ones)")
    p.add_argument("--out", required=True, help="checkpoint directory to write (replaced at the end)")
    p.add_argument("--work", default=None,
                   help="preprocessed frames and the resumable training state (default: $VLA_PRUNER_CACHE/train/<out name>)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          validate_every=args.validate_every, save_every=args.save_every,
                          augment=not args.no_augment, threads=args.threads,
                          init=str(Path(args.init).resolve()) if args.init else "")
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} must be at least 1")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        init_training = _init_training(args.init) if args.init else None
        work = Path(args.work) if args.work else cache_root() / "train" / out.name
        data, provenance = build_chunk_data(args.demos, work, args.workers)
        train_episodes, val_episodes = split_episodes(data.episodes, args.validation, args.seed)
    except (ValueError, FileNotFoundError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    suites = sorted({d["suite"] for d in provenance["demos"]})
    if len(suites) != 1:
        print(f"error: demonstrations of several suites ({', '.join(suites)}); one suite's statistics per model",
              file=sys.stderr)
        return 2
    train_frames, val_frames = data.frames_of(train_episodes), data.frames_of(val_episodes)
    stats = {f"{suites[0]}_no_noops": dataset_statistics(data.actions[train_frames], data.states[train_frames],
                                                        len(train_episodes))}
    # a fresh model: every word LIBERO and LIBERO-PRO can give it has a token of its own; continuing: the starting
    # checkpoint's tokenizer (its embedding rows are those words')
    tokenizer = (OpenVLAProcessor.from_pretrained(args.init).tokenizer if args.init
                 else build_tokenizer(every_instruction()))
    processor = ImageProcessor.from_config(PREPROCESSOR_CONFIG)
    batcher = Batcher(data, processor, lambda text: tokenizer(prompt_for(text), return_tensors="pt")["input_ids"],
                      stats[f"{suites[0]}_no_noops"])
    print(f"{data.episodes} demonstrations ({len(data.frames)} steps) of {suites[0]} tasks "
          f"{sorted({d['task_id'] for d in provenance['demos']})}: {len(train_episodes)} train, {len(val_episodes)} "
          f"validation; {cfg.steps} steps of {cfg.batch_size}", flush=True)
    history: list[dict] = []
    log_file = work / "log.jsonl"

    def log(entry: dict) -> None:
        history.append(entry)
        with log_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    started = time.monotonic()
    if args.init:
        model = OpenVLAOFT.from_pretrained(args.init, device="cpu", dtype="float32").train()
    else:
        model = new_oft_model(SMALL_CONFIG, args.seed)
    model = train(model, batcher, train_frames, val_frames, cfg, work / "train_state.pt", log)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    save_oft_checkpoint(model, staging, SMALL_CONFIG, stats, cfg.steps)
    tokenizer.save_pretrained(str(staging))
    (staging / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    (staging / "training.json").write_text(json.dumps({
        "command": "python scripts/train_policy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": asdict(cfg), "validation_demos": int(args.validation), "torch": torch.__version__,
        "demonstrations": {"count": data.episodes, "steps": int(len(data.frames)),
                           "train": train_episodes.tolist(), "validation": val_episodes.tolist(),
                           "sources": provenance["demos"]},
        "history": [json.loads(line) for line in log_file.read_text().splitlines()],
        "init": init_training,
        "this_invocation_s": round(time.monotonic() - started, 1),
    }, indent=2))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(out)
    print(f"saved {out} (final validation L1 {history[-1]['val_loss'] if history else float('nan'):.4f})")
    return 0


def _init_training(init: str) -> dict:
    """The starting checkpoint, checked before any preprocessing as a run checks one (its files, its family: an
    OpenVLA-OFT) and against the small policy's architecture; with how it was trained (its training.json)."""
    directory = Path(init)
    _, raw = check_checkpoint_files(directory)
    check_family(directory, OFT_FAMILY, [model_family(name) for name in family_names()], parts_pending=False)
    mismatched = sorted(k for k, v in SMALL_CONFIG.items() if raw.get(k) != v)
    if mismatched:
        raise ValueError(f"--init {init} is not a checkpoint of the small policy's architecture "
                         f"(config.json differs in {', '.join(mismatched[:5])})")
    history = directory / "training.json"
    return {"checkpoint": str(directory.resolve()),
            "training": json.loads(history.read_text()) if history.is_file() else None}


if __name__ == "__main__":
    sys.exit(main())
