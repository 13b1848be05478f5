"""Which visual tokens a pruner kept, drawn on the image the model saw (issue 5): one step of two runs side
by side (e.g. VLA-Pruner vs FastV) as PNG + PDF, and the whole episode as MP4.

    python -m evaluate.overlay RUN_A RUN_B --task 0 --init 0 --step 10 --out results/overlay

A run made with `video=true` stores the episode's upright agent-view frames (frame 0 = first observation,
then one per env step) and, per query, each pruning stage's kept-token bitmask. For OpenVLA (one query per
env step) query i saw frame i, so rotating the frame back and applying the model's preprocessing gives its
224x224 input, on which token j is the 14x14 patch at row j // 16, column j % 16. The frames went through
the video codec, so the view is close to, not bit-identical with, what the model saw.

Only single-stage pruners are drawn: a later stage's mask indexes the rows left by the previous stage (and
merged tokens), not the patch grid. A query without pruning stages (pruner none, keep 1.0) is dense. VLA-Cache
deletes nothing: its queries record which tokens the last layer reused (`reused_mask`), drawn tinted blue beside
the recomputed ones.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evaluate.analysis.labels import method_label
from evaluate.store import ResultStore
from evaluate.envs.libero_conventions import libero_image
from vla_pruner.models.preprocess import IMAGE_SIZE
from vla_pruner.pruning import hex_to_indices

GRID = 16  # OpenVLA's 16x16 patch grid: 256 visual tokens
PATCH = IMAGE_SIZE // GRID
DIM = 0.35  # dropped patches: greyscale at this fraction of their brightness
REUSED_TINT = np.array([60, 110, 255])  # reused patches (VLA-Cache): half their pixels, half this blue
SCALE = 2  # panels are enlarged (nearest) so that 14-pixel patches stay readable
HEADER = 48  # title bar height; kept even, as H.264 (yuv420p) needs even frame sizes
GAP = 8
FPS = 5


class OverlayError(ValueError):
    """A run or episode cannot be drawn (missing, no video, multi-stage pruner)."""


@dataclass
class Episode:
    label: str  # e.g. "VLA-Pruner keep 0.25"
    frames: np.ndarray  # [T, 256, 256, 3] upright video frames
    masks: list[np.ndarray | None]  # per query: bool[256] kept tokens, None when nothing was pruned
    warmup: list[bool]  # per query: dense warm-up (VLA-Pruner's history still filling)
    reuses: bool = False  # the masks are recomputed tokens, the others reused (VLA-Cache), not kept vs dropped

    def view(self, step: int) -> np.ndarray:
        """The model's 224x224 input at query `step`: the frame un-flipped, then preprocessed as live."""
        return libero_image(self.frames[step][::-1, ::-1])


def run_label(run_dir: Path) -> str:
    from omegaconf import OmegaConf

    config = run_dir / "config.yaml"
    if not config.exists():
        return run_dir.name
    cfg = OmegaConf.load(config)
    return f"{method_label(cfg)} keep {cfg.keep}"  # named as its table row


def query_mask(query: dict) -> tuple[np.ndarray | None, bool]:
    """(kept tokens of the first image as bool[256] or None if dense, warm-up flag) of one query record; for a
    KV-reusing query (VLA-Cache) the recomputed tokens."""
    stages = query.get("pruning") or []
    if not stages:
        return None, False
    if "reused_mask" in query:
        recomputed = np.ones(GRID * GRID, dtype=bool)
        recomputed[hex_to_indices(query["reused_mask"][0])] = False
        return recomputed, bool(stages[0]["warmup"])
    if len(stages) > 1:
        raise OverlayError(f"{len(stages)} pruning stages: only single-stage pruners map onto the patch grid")
    kept = np.zeros(GRID * GRID, dtype=bool)
    kept[hex_to_indices(stages[0]["kept_mask"][0])] = True
    return kept, bool(stages[0]["warmup"])


def load_episode(run_dir: str | Path, task: int, init: int) -> Episode:
    import imageio.v2 as imageio

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OverlayError(f"{run_dir} is not a run directory")
    record = next((r for r in ResultStore(run_dir).records() if r.key == (task, init)), None)
    if record is None:
        raise OverlayError(f"{run_dir} has no finished episode for task {task}, init {init}")
    video = run_dir / "videos" / (record.video or "")
    if not record.video or not video.is_file():
        raise OverlayError(f"{run_dir} has no video of task {task}, init {init}: re-run with video=true")
    frames = np.stack(imageio.mimread(video, memtest=False))
    masks, warmup = zip(*(query_mask(q) for q in record.queries)) if record.queries else ((), ())
    if len(masks) > len(frames):
        raise OverlayError(f"{video} has {len(frames)} frames for {len(masks)} queries: "
                           f"expected one query per env step (OpenVLA)")
    reuses = any("reused_mask" in q for q in record.queries)
    return Episode(run_label(run_dir), frames, list(masks), list(warmup), reuses)


def shade(view: np.ndarray, kept: np.ndarray | None, reused: bool = False) -> np.ndarray:
    """Dropped patches greyed and darkened (`reused`: the patches not in `kept` tinted blue), kept ones untouched
    (kept=None: all kept)."""
    if kept is None:
        return view.copy()
    pixels = kept.reshape(GRID, GRID).repeat(PATCH, axis=0).repeat(PATCH, axis=1)[..., None]
    if reused:
        other = ((view.astype(np.float32) + REUSED_TINT) / 2).astype(np.uint8)
    else:
        other = (DIM * view.mean(axis=-1, keepdims=True)).astype(np.uint8)
    return np.where(pixels, view, other)


def draw_frame(view: np.ndarray, kept: np.ndarray | None, title: str, reused: bool = False) -> np.ndarray:
    """One panel: the shaded 224 view enlarged SCALE times under a title bar."""
    image = shade(view, kept, reused).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    panel = Image.new("RGB", (image.shape[1], HEADER + image.shape[0]), "white")
    panel.paste(Image.fromarray(image), (0, HEADER))
    ImageDraw.Draw(panel).multiline_text((6, 4), title, fill="black", font=ImageFont.load_default(size=17))
    return np.asarray(panel)


def episode_panel(episode: Episode, step: int) -> np.ndarray:
    """Panel of query `step`; past the episode's end its last query stays on screen, marked as ended."""
    last = len(episode.masks) - 1
    s = min(step, last)
    kept, warm = episode.masks[s], episode.warmup[s]
    if warm:
        status = "warm-up (dense)"
    elif kept is None:
        status = "dense"
    elif episode.reuses:
        status = f"recomputed {int(kept.sum())}/{GRID * GRID}, reused {int((~kept).sum())} (blue)"
    else:
        status = f"kept {int(kept.sum())}/{GRID * GRID}"
    ended = " (episode ended)" if step > last else ""
    return draw_frame(episode.view(s), None if warm else kept, f"{episode.label}\nstep {s}: {status}{ended}",
                      episode.reuses)


def side_by_side(a: Episode, b: Episode, step: int) -> np.ndarray:
    left, right = episode_panel(a, step), episode_panel(b, step)
    gap = np.full((left.shape[0], GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def write_video(a: Episode, b: Episode, path: Path, fps: int = FPS) -> int:
    """Both episodes side by side, one frame per query of the longer one; returns the frame count."""
    import imageio.v2 as imageio

    steps = max(len(a.masks), len(b.masks))
    with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
        for step in range(steps):
            writer.append_data(side_by_side(a, b, step))
    return steps


def write_comparison(run_a: str | Path, run_b: str | Path, task: int, init: int, step: int,
                     out: str | Path) -> list[Path]:
    """`<out>.png` and `<out>.pdf` of query `step`, `<out>.mp4` of the whole episode."""
    a, b = load_episode(run_a, task, init), load_episode(run_b, task, init)
    for ep, run in ((a, run_a), (b, run_b)):
        if not 0 <= step < len(ep.masks):
            raise OverlayError(f"step {step} is out of range: {run} has {len(ep.masks)} queries")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(side_by_side(a, b, step))
    paths = [Path(f"{out}.{ext}") for ext in ("png", "pdf", "mp4")]
    picture.save(paths[0])
    picture.save(paths[1], resolution=150)
    write_video(a, b, paths[2])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluate.overlay", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", help="run directory (made with video=true), drawn on the left")
    parser.add_argument("run_b", help="run directory drawn on the right")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--init", type=int, default=0, help="init state index of the episode")
    parser.add_argument("--step", type=int, default=10, help="query (env step) of the PNG/PDF")
    parser.add_argument("--out", default="results/overlay", help="output path without extension")
    args = parser.parse_args(argv)
    try:
        paths = write_comparison(args.run_a, args.run_b, args.task, args.init, args.step, args.out)
    except OverlayError as e:
        sys.exit(f"error: {e}")
    print("\n".join(map(str, paths)))

