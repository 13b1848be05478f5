"""LLM time of one OpenVLA query (prefill incl. selection + 6 cached decode steps), pruned vs dense, beside
the analytic prefill FLOPs ratio, on a model with OpenVLA-7B's token counts and depth at reduced width.

The measured path is the serving path: the pruning engine with SDPA attention, probing only the
attention rows each pruner asks for. VLA-Pruner is measured after its warm-up (history full).

    python scripts/bench_pruning.py --queries 20 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import baselines
from evaluate.analysis.flops import prefill_macs
from vla_pruner.engine import PruningEngine
from vla_pruner.layout import SequenceLayout
from vla_pruner.models.openvla import ACTION_DIM
from vla_pruner.models.tiny import seven_b_shaped
from vla_pruner.pruning import ModelLayout

PRUNERS = ("none", "fastv", "sparsevlm", "random", "vla")
KEEPS = (0.5, 0.25, 0.125)


@torch.inference_mode()
def time_query(engine: PruningEngine, embeds: torch.Tensor) -> tuple[float, float, list[int]]:
    """(prefill ms, decode ms, tokens per layer) of one query."""
    layout = SequenceLayout.openvla(embeds.shape[1])
    t0 = time.perf_counter()
    state = engine.prefill(embeds, layout)  # and the first action token
    t1 = time.perf_counter()
    engine.decode(state, ACTION_DIM)
    engine.finish(state)
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0), 1e3 * (t2 - t1), state.trace.prefill_tokens


def bench(model, name: str, keep: float, embeds: list[torch.Tensor], warmup: int) -> dict:
    lm = model.language_model
    pruner = baselines.build_pruner({"name": name}, keep, ModelLayout(len(lm.layers), (256,)))
    pruner.reset(seed=0, episode="bench")
    engine = PruningEngine(lm, pruner)
    prefill, decode, tokens = [], [], None
    for i, e in enumerate(embeds):
        p, d, tokens = time_query(engine, e)
        if i >= warmup:
            prefill.append(p)
            decode.append(d)
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20, help="timed queries per setting")
    parser.add_argument("--prompt-tokens", type=int, default=35, help="text tokens incl. BOS and 29871")
    parser.add_argument("--llm-width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = seven_b_shaped(args.llm_width, vit_width=64)
    config = model.language_model.config
    d, m = config.hidden_size, config.intermediate_size
    torch.manual_seed(1)
    warmup = 4  # VLA-Pruner's history (window 3) fills during these; all settings skip them alike
    embeds = [0.02 * torch.randn(1, 256 + args.prompt_tokens, d) for _ in range(warmup + args.queries)]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU; LLM {config.num_hidden_layers}"
          f" layers x {d} (MLP {m}), 256 visual + {args.prompt_tokens} text tokens, 7 decoded; "
          f"median of {args.queries} queries; load average {os.getloadavg()[0]:.2f}")
    dense = bench(model, "none", 1.0, embeds, warmup)
    dense_macs = prefill_macs(dense["tokens"], d, m)
    print(f"{'pruner':<10} {'keep':>5} {'prefill ms':>10} {'decode ms':>9} {'LLM ms':>7} {'speedup':>7} "
          f"{'FLOPs ratio':>11}")
    print(f"{'none':<10} {1.0:>5} {dense['prefill']:>10.1f} {dense['decode']:>9.1f} "
          f"{dense['prefill'] + dense['decode']:>7.1f} {1.0:>7.2f} {1.0:>11.2f}")
    for keep in KEEPS:
        for name in PRUNERS[1:]:
            r = bench(model, name, keep, embeds, warmup)
            total = r["prefill"] + r["decode"]
            speedup = (dense["prefill"] + dense["decode"]) / total
            ratio = dense_macs / prefill_macs(r["tokens"], d, m)
            print(f"{name:<10} {keep:>5} {r['prefill']:>10.1f} {r['decode']:>9.1f} {total:>7.1f} {speedup:>7.2f} "
                  f"{ratio:>11.2f}")


if __name__ == "__main__":
    main()
