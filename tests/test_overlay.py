"""evaluate.analysis.overlay on a synthetic run directory (real episode records and an MP4, no simulator): shaded
pixels follow the kept mask, the comparison files are written, a run without video is refused."""
from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from evaluate.analysis import overlay
from evaluate.store import EpisodeRecord
from vla_pruner.pruning import indices_to_hex

STEPS = 4
KEPT = [0, 5, 17, 255]  # token 17 = patch row 1, column 1


def stage(kept: list[int], warmup: bool = False) -> dict:
    return {"stage": 0, "kept": [len(kept)], "kept_mask": [indices_to_hex(torch.tensor(kept), 256)],
            "warmup": warmup, "select_ms": 0.0}


def make_run(root, pruner: str, video: bool = True):
    """Run dir of one episode (task 0, init 0) with STEPS queries; the first is a dense warm-up."""
    run = root / pruner
    (run / "episodes").mkdir(parents=True)
    (run / "config.yaml").write_text(f"pruner:\n  name: {pruner}\nkeep: 0.25\n")
    queries = [{"pruning": [stage(list(range(256)), warmup=True)]}]
    queries += [{"pruning": [stage(KEPT)]} for _ in range(STEPS - 1)]
    record = EpisodeRecord(suite="libero_object", task_id=0, task="t", init_index=0, success=False,
                           steps=STEPS, wall_time_s=0.0, queries=queries)
    if video:
        (run / "videos").mkdir()
        record.video = "task00_init00_failure.mp4"
        frames = np.random.default_rng(0).integers(80, 256, (STEPS + 1, 256, 256, 3), dtype=np.uint8)
        imageio.mimwrite(run / "videos" / record.video, list(frames), fps=5, macro_block_size=1)
    (run / "episodes" / "task00.jsonl").write_text(json.dumps(record.__dict__) + "\n")
    return run


def test_shaded_pixels_follow_mask(tmp_path):
    episode = overlay.load_episode(make_run(tmp_path, "vla"), 0, 0)
    assert len(episode.frames) == STEPS + 1 and episode.warmup == [True] + [False] * (STEPS - 1)
    view = episode.view(1)
    shaded = overlay.shade(view, episode.masks[1])
    p = overlay.PATCH
    kept_patch, dropped_patch = np.s_[p:2 * p, p:2 * p], np.s_[p:2 * p, 2 * p:3 * p]  # tokens 17 and 18
    assert np.array_equal(shaded[kept_patch], view[kept_patch])
    assert shaded[dropped_patch].mean() < 0.5 * view[dropped_patch].mean()
    assert (shaded != view).any(axis=-1).sum() == (256 - len(KEPT)) * p * p


def test_comparison_files_and_frame_count(tmp_path):
    out = tmp_path / "out" / "cmp"
    paths = overlay.write_comparison(make_run(tmp_path, "vla"), make_run(tmp_path, "fastv"), 0, 0, 2, out)
    assert all(p.stat().st_size > 0 for p in paths)
    png = imageio.imread(paths[0])
    assert png.shape == (overlay.HEADER + 224 * overlay.SCALE, 2 * 224 * overlay.SCALE + overlay.GAP, 3)
    assert len(imageio.mimread(paths[2], memtest=False)) == STEPS


def test_missing_video_or_episode(tmp_path):
    run = make_run(tmp_path, "vla", video=False)
    with pytest.raises(overlay.OverlayError, match="video=true"):
        overlay.load_episode(run, 0, 0)
    with pytest.raises(overlay.OverlayError, match="no finished episode"):
        overlay.load_episode(run, 0, 1)


def test_vla_cache_draws_reused_patches_blue(tmp_path):
    """A VLA-Cache query records the tokens it reused (two pruning stages, whose masks are not the patch grid):
    the overlay tints the reused patches and leaves the recomputed ones untouched."""
    run = make_run(tmp_path, "vla_cache")
    path = run / "episodes" / "task00.jsonl"
    record = json.loads(path.read_text())
    reused = [17, 18]
    for i, query in enumerate(record["queries"]):
        query["pruning"] = [stage(list(range(256)), warmup=i == 0)] * 2
        query["reused_mask"] = [indices_to_hex(torch.tensor([] if i == 0 else reused, dtype=torch.long), 256)]
    path.write_text(json.dumps(record) + "\n")
    episode = overlay.load_episode(run, 0, 0)
    assert episode.reuses and episode.warmup == [True] + [False] * (STEPS - 1)
    assert int((~episode.masks[1]).sum()) == 2
    view = episode.view(1)
    shaded = overlay.shade(view, episode.masks[1], reused=True)
    p = overlay.PATCH
    assert np.array_equal(shaded[p:2 * p, 3 * p:4 * p], view[p:2 * p, 3 * p:4 * p])  # token 19: recomputed
    tinted = shaded[p:2 * p, 2 * p:3 * p].astype(int)  # token 18: reused
    assert (tinted[..., 2] - tinted[..., 0]).mean() > (view[p:2 * p, 2 * p:3 * p, 2].astype(int)
                                                        - view[p:2 * p, 2 * p:3 * p, 0]).mean() + 30
