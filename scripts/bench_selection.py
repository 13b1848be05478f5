"""Selection overhead per policy query, on synthetic inputs of realistic size (no model).

    python scripts/bench_selection.py [--repeats 200] [--width 4096] [--threads N]

Times `select()` (and VLA-Pruner's `observe()`) as the engine would call them, for OpenVLA's one image
(M = 256) and OFT's two (M = 512 = 2 x 256, budgets per image), at keep 0.5 / 0.25 / 0.125. Independent random
semantic and action scores make the VLA-Pruner candidate union near its largest (2 x M_keep per image), the
slowest case for the diversity filter. Also times select_diverse alone on one set of n rows (n = 256, 512;
k = n/2), split into the cosine-distance matrix and the greedy (which includes a copy of
the matrix, about 1 us). Prints medians.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import baselines  # noqa: F401  (registers every pruner)
from vla_pruner.diversity import cosine_distances, greedy_max_min, select_diverse
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner

TEXT_ROWS = 20  # prompt tokens after the visual block in a LIBERO instruction (order of magnitude)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def stage_inputs(layout: ModelLayout, width: int, rows: int, generator: torch.Generator) -> StageInputs:
    return StageInputs(
        stage=0,
        attention=[torch.rand(rows, m, generator=generator) for m in layout.image_tokens],
        visual_embeddings=[torch.randn(m, width, generator=generator) for m in layout.image_tokens],
        text_embeddings=torch.randn(TEXT_ROWS, width, generator=generator))


def bench_pruners(layout: ModelLayout, keep: float, width: int, repeats: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    vla = build_pruner({"name": "vla"}, keep=keep, layout=layout)
    action = [torch.rand(m, generator=generator) for m in layout.image_tokens]
    while vla.warming_up:  # fill the history as dense warm-up queries would
        vla.select(stage_inputs(layout, width, 1, generator))
        vla.observe(action)
    vla_inputs = stage_inputs(layout, width, 1, generator)  # "prefill" rows passed pre-averaged
    last_kept = vla.select(vla_inputs).kept
    kept_action = [a[k] for a, k in zip(action, last_kept)]

    def observe():
        vla.last_kept = last_kept
        vla.observe(kept_action)

    fastv = build_pruner({"name": "fastv"}, keep=keep, layout=layout)
    fastv_inputs = stage_inputs(layout, width, 1, generator)
    sparse = build_pruner({"name": "sparsevlm"}, keep=keep, layout=layout)
    sparse_inputs = stage_inputs(layout, width, TEXT_ROWS, generator)
    return {
        "vla select": median_ms(lambda: vla.select(vla_inputs), repeats),
        "vla observe": median_ms(observe, repeats),
        "fastv": median_ms(lambda: fastv.select(fastv_inputs), repeats),
        "sparsevlm single": median_ms(lambda: sparse.select(sparse_inputs), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--width", type=int, default=4096, help="embedding width d (Llama-2-7B: 4096)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d = {args.width}, "
          f"median of {args.repeats} calls, milliseconds per policy query\n")

    layouts = {"M=256 (OpenVLA, 1 image)": (256,), "M=512 (OFT, 2 x 256)": (256, 256)}
    columns = ("vla select", "vla observe", "fastv", "sparsevlm single")
    print(f"| {'layout':<26} | keep  | " + " | ".join(f"{c:>16}" for c in columns) + " |")
    print(f"|{'-' * 28}|-------|" + "|".join("-" * 18 for _ in columns) + "|")
    for label, image_tokens in layouts.items():
        layout = ModelLayout(num_layers=32, image_tokens=image_tokens)
        for keep in (0.5, 0.25, 0.125):
            times = bench_pruners(layout, keep, args.width, args.repeats)
            print(f"| {label:<26} | {keep:<5} | " + " | ".join(f"{times[c]:>16.3f}" for c in columns) + " |")

    print(f"\nselect_diverse alone (k = n/2, d = {args.width}), milliseconds")
    print("|   n | distance matrix | greedy | select_diverse |")
    print("|-----|-----------------|--------|----------------|")
    for n in (256, 512):
        features = torch.randn(n, args.width, generator=torch.Generator().manual_seed(n))
        dist = cosine_distances(features).numpy()
        matrix = median_ms(lambda: cosine_distances(features), args.repeats)
        greedy = median_ms(lambda: greedy_max_min(dist.copy(), n // 2), args.repeats)
        total = median_ms(lambda: select_diverse(features, n // 2), args.repeats)
        print(f"| {n:>3} | {matrix:>15.3f} | {greedy:>6.3f} | {total:>14.3f} |")


if __name__ == "__main__":
    main()
