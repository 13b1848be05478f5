"""The training loop: AdamW with warm-up and cosine decay over a fixed number of steps, a validation loss on
held-out episodes, a progress bar with the loss, and a resumable state file written every `save_every` steps (the
model, the optimiser, the step, every random generator, and the config and data it trained on), so an interrupted
run continues where it stopped and ends with the same weights as an uninterrupted one, and a state of other settings
or data is refused, never continued. A loss that stops being finite ends the training before its step is saved."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from vla_pruner.models.openvla_oft.model import CHUNK, OpenVLAOFT
from vla_pruner.models.openvla.processor import ImageProcessor
from vla_pruner.models.openvla_oft.proprio import normalize_proprio

from .augment import crop_boxes, crop_resize
from .data import ChunkData, batches
from .model import chunk_loss, pixel_values, predict_chunks


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    validate_every: int = 500
    save_every: int = 100
    augment: bool = True  # OFT's random crop (90% of the area); validation takes the evaluation's centre crop
    threads: int = 0  # torch threads (0: leave torch's default)
    init: str = ""  # the checkpoint the weights start from ("" : a fresh seeded model)

    def __post_init__(self):
        for name in ("steps", "batch_size", "validate_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr} must be a positive finite number")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be at least 0")


class ResumeError(ValueError):
    """The state file is of another training (settings or data): continuing it would mix the two."""


class NonFiniteLoss(ValueError):
    """The loss became nan or inf: every later step would train on it."""


class TrainingStopped(Exception):
    """`stop_requested` said so between two steps; the state of `step` is saved."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}")
        self.step = step


def saved_state(state_file: Path, cfg: TrainConfig, data: Any = None, mmap: bool = False) -> dict | None:
    """The training state in `state_file` (None if there is none), refused with a ResumeError naming what differs
    when it was written with another config or on other data (`data`: what identifies the demonstrations and the
    split, as `train` records it). `mmap`: to check it, without reading its tensors."""
    if not state_file.is_file():
        return None
    saved = torch.load(state_file, map_location="cpu", weights_only=False, mmap=mmap)  # our own file, `_save`'s
    mine = {**asdict(cfg), "data": data}
    theirs = {**saved["config"], "data": saved.get("data")}
    differ = [key for key in mine if mine[key] != theirs.get(key)]
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)} there, {mine[k]} here" if k != "data" else "other demonstrations "
                          "or another validation split" for k in differ)
        raise ResumeError(f"{state_file} holds the state of another training ({shown}); re-run with its settings to "
                          "resume it, or give another --work to start anew")
    return saved


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to 10% of it at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


class Batcher:
    """Turns frame indices into (prompt ids, pixel values, normalised proprio, normalised target chunks)."""

    def __init__(self, data: ChunkData, processor: ImageProcessor, tokenize: Callable[[str], torch.Tensor],
                 statistics: dict[str, Any]):
        self.data, self.processor, self.statistics = data, processor, statistics
        self.prompts = {text: tokenize(text) for text in dict.fromkeys(data.instructions)}

    def __call__(self, index: np.ndarray, rng: np.random.Generator | None):
        """`rng` given: random crops (training); None: the evaluation's centre crop."""
        index = np.sort(index)  # sequential reads from a memmap
        frames = np.asarray(self.data.frames[index])
        b, cams = frames.shape[:2]
        flat = frames.reshape(b * cams, *frames.shape[2:])
        starts = crop_boxes(len(flat), rng) if rng is not None else np.full((len(flat), 2), (1 - 0.9**0.5) / 2)
        frames = crop_resize(flat, starts).reshape(frames.shape)
        proprio = normalize_proprio(self.data.states[index], self.statistics["proprio"])
        target = normalize_proprio(self.data.chunk(index, CHUNK), self.statistics["action"])
        prompt = self.prompts[self.data.instructions[self.data.episode[index[0]]]]
        return prompt, pixel_values(self.processor, frames), proprio, torch.as_tensor(target, dtype=torch.float32)


def validation_loss(model: OpenVLAOFT, batcher: Batcher, frames: np.ndarray, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches(batcher.data, frames, batch_size, np.random.default_rng(0)):
            prompt, pixels, proprio, target = batcher(batch, None)
            total += float(chunk_loss(predict_chunks(model, prompt, pixels, proprio), target)) * len(batch)
            count += len(batch)
    model.train()
    return total / max(count, 1)


def train(model: OpenVLAOFT, batcher: Batcher, train_frames: np.ndarray, val_frames: np.ndarray,
          cfg: TrainConfig, state_file: Path, log: Callable[[dict], None], data: Any = None,
          stop_requested: Callable[[], bool] = lambda: False) -> OpenVLAOFT:
    """Train `model` for `cfg.steps` steps, resuming from `state_file` if it exists (and is of `cfg` and `data`:
    `saved_state`); `log` gets a dict per validation (step, train loss, validation loss, seconds). When
    `stop_requested()` turns true, the state is saved after the step and TrainingStopped raised."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    step, epoch, seconds, running = 0, 0, 0.0, []
    saved = saved_state(state_file, cfg, data)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, epoch, seconds = saved["step"], saved["epoch"], saved["seconds"]
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
    model.train()
    with tqdm(total=cfg.steps, initial=step, unit="step", desc="train", dynamic_ncols=True) as bar:
        epoch_batches = _epoch(batcher, train_frames, cfg, epoch, step)
        started = time.monotonic() - seconds
        while step < cfg.steps:
            batch = next(epoch_batches, None)
            if batch is None:
                epoch += 1
                epoch_batches = batches(batcher.data, train_frames, cfg.batch_size,
                                        np.random.default_rng([cfg.seed, epoch]))
                continue
            prompt, pixels, proprio, target = batcher(batch, rng if cfg.augment else None)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            loss = chunk_loss(predict_chunks(model, prompt, pixels, proprio), target)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"the training loss became {loss.item()} at step {step + 1} (learning rate "
                                    f"{learning_rate(cfg, step):g}); nothing of it is saved: lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            running.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}", epoch=epoch)
            if step % cfg.validate_every == 0 or step == cfg.steps:
                val = validation_loss(model, batcher, val_frames, cfg.batch_size) if len(val_frames) else float("nan")
                log({"step": step, "epoch": epoch, "train_loss": float(np.mean(running[-cfg.validate_every:])),
                     "val_loss": val, "seconds": round(time.monotonic() - started, 1)})
                bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}", val=f"{val:.4f}", epoch=epoch)
            stopping = stop_requested()
            if step % cfg.save_every == 0 or step == cfg.steps or stopping:
                _save(state_file, model, optimizer, cfg, data, step, epoch, time.monotonic() - started, rng)
            if stopping and step < cfg.steps:
                raise TrainingStopped(step)
    return model.eval()


def _epoch(batcher: Batcher, frames: np.ndarray, cfg: TrainConfig, epoch: int, step: int):
    """The batches left of epoch `epoch` at `step` (a resumed run skips those the saved run had taken)."""
    per_epoch = sum(1 for _ in batches(batcher.data, frames, cfg.batch_size, np.random.default_rng([cfg.seed, 0])))
    iterator = batches(batcher.data, frames, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
    for _ in range(step - epoch * per_epoch):  # every epoch has the same number of batches
        next(iterator)
    return iterator


def _save(path: Path, model, optimizer, cfg: TrainConfig, data: Any, step: int, epoch: int, seconds: float,
          rng) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": asdict(cfg),
                "data": data, "step": step, "epoch": epoch, "seconds": seconds, "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)
