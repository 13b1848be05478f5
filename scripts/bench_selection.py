"""Selection overhead per policy query, on synthetic inputs of realistic size (no model).

    python scripts/bench_selection.py [--repeats 200] [--width 4096] [--threads N]

Times `select()` (and VLA-Pruner's `observe()`) as the engine would call them, for OpenVLA's one image
(M = 256) and OFT's two (M = 512 = 2 x 256, budgets per image), at keep 0.5 / 0.25 / 0.125. Independent random
semantic and action scores make the VLA-Pruner candidate union large (up to 2 x M_keep per image), the slow
case for the diversity filter. Then VLA-Pruner's steps one by one, select_diverse alone on n rows
(n = 256, 512; k = n/2) split into the cosine-distance matrix and the greedy (the greedy's time includes a
copy of the matrix), and last VLA-Pruner's select() against its diversity filter as it was before issue 15
(a finiteness scan of all n x d features, then the full n x n product), alternating call by call on the same
inputs, with the selections compared. Prints medians. On a shared machine, --threads 1 gives steadier numbers.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

import vla_pruner.method
from vla_pruner.diversity import cosine_distances, greedy_max_min, select_diverse
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner, top_k
from evaluate.arguments import CommandParser, at_least

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


def bench_vla_parts(keep: float, width: int, repeats: int) -> dict[str, float]:
    """VLA-Pruner's steps for one image of 256 tokens, timed one by one."""
    generator = torch.Generator().manual_seed(0)
    vla = build_pruner({"name": "vla"}, keep=keep, layout=ModelLayout(num_layers=32, image_tokens=(256,)))
    for _ in range(vla.config.window):
        vla.history.append([torch.rand(256, generator=generator)])
    semantic, embeddings = torch.rand(256, generator=generator), torch.randn(256, width, generator=generator)
    action = vla.action_estimate()[0]
    k = vla.budgets[0]

    def union():
        return torch.unique(torch.cat([top_k(semantic, k), top_k(action, k)]))

    candidates = union()
    return {
        "temporal estimate": median_ms(vla.action_estimate, repeats),
        "2 top-k + union": median_ms(union, repeats),
        "|C|": len(candidates),
        "diversity filter": median_ms(lambda: select_diverse(embeddings[candidates], k), repeats),
    }


def select_diverse_before(features: torch.Tensor, k: int, dtype: torch.dtype = torch.float32,
                          rows: torch.Tensor | None = None) -> torch.Tensor:
    """The float32 diversity filter before issue 15, the baseline below: VLA-Pruner gathered the candidates'
    features by indexing, the filter scanned every feature for NaN/inf, normalised a copy, took the full n x n
    product of the unit rows and ran the same greedy."""
    if rows is not None:
        return rows[select_diverse_before(features[rows], k)]
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features must be finite")
    if k >= len(features):
        return torch.arange(len(features))
    unit = F.normalize(features.float(), dim=1)
    return torch.tensor(greedy_max_min((1.0 - unit @ unit.T).numpy(), k))


def bench_before_after(layout: ModelLayout, keep: float, width: int, repeats: int) -> tuple[float, float, bool]:
    """(ms before, ms now, identical selections) of VLA-Pruner's select(): 10 inputs compared, one timed with
    the two filters alternating call by call, so that a shared machine's drift hits both alike."""
    generator = torch.Generator().manual_seed(1)
    vla = build_pruner({"name": "vla"}, keep=keep, layout=layout)
    while vla.warming_up:
        vla.select(stage_inputs(layout, 8, 1, generator))
        vla.observe([torch.rand(m, generator=generator) for m in layout.image_tokens])
    inputs = [stage_inputs(layout, width, 1, generator) for _ in range(10)]
    filters = {"now": vla_pruner.method.select_diverse, "before": select_diverse_before}
    kept, times = {}, {name: [] for name in filters}
    try:
        for name, select in filters.items():
            vla_pruner.method.select_diverse = select
            kept[name] = [vla.select(x).kept for x in inputs]
        for _ in range(repeats + 1):  # the first round is a warm-up
            for name, select in filters.items():
                vla_pruner.method.select_diverse = select
                start = time.perf_counter()
                vla.select(inputs[0])
                times[name].append(time.perf_counter() - start)
    finally:
        vla_pruner.method.select_diverse = filters["now"]
    identical = all(torch.equal(a, b) for x, y in zip(kept["now"], kept["before"]) for a, b in zip(x, y))
    before, now = (1e3 * statistics.median(times[name][1:]) for name in ("before", "now"))
    return before, now, identical


def main() -> None:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least(1), default=200)
    parser.add_argument("--width", type=at_least(1), default=4096, help="embedding width d (Llama-2-7B: 4096)")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:  # torch's, and NumPy's BLAS for the diversity filter's Gram matrix
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
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

    print("\nVLA-Pruner steps, one image of 256 tokens, milliseconds (|C| = union size)")
    parts = ("temporal estimate", "2 top-k + union", "|C|", "diversity filter")
    print("| keep  | " + " | ".join(f"{p:>17}" for p in parts) + " |")
    print("|-------|" + "|".join("-" * 19 for _ in parts) + "|")
    for keep in (0.5, 0.25, 0.125):
        times = bench_vla_parts(keep, args.width, args.repeats)
        print(f"| {keep:<5} | " + " | ".join(f"{times[p]:>17.3f}" if p != "|C|" else f"{times[p]:>17d}"
                                            for p in parts) + " |")

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

    print("\nVLA-Pruner select(), milliseconds: before issue 15 vs now, same inputs (10 compared, 1 timed)")
    print(f"| {'layout':<26} | keep  | before |    now | speedup | identical |")
    print(f"|{'-' * 28}|-------|--------|--------|---------|-----------|")
    results = {}
    for label, image_tokens in layouts.items():
        for keep in (0.5, 0.25, 0.125):
            before, now, identical = bench_before_after(ModelLayout(32, image_tokens), keep, args.width, args.repeats)
            results[label, keep] = before, now, identical
            print(f"| {label:<26} | {keep:<5} | {before:>6.3f} | {now:>6.3f} | {before / now:>6.2f}x "
                  f"| {'yes' if identical else 'NO':>9} |")
    before, now, identical = results["M=512 (OFT, 2 x 256)", 0.25]
    print(f"VLA-Pruner select at M=512, keep 0.25: {before:.3f} ms before, {now:.3f} ms now, {before / now:.2f}x, "
          f"identical selections: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
