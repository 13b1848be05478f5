"""One OpenVLA query's LLM time (prefill incl. selection, then 6 cached decode steps) for dense, FastV and
VLA-Pruner side by side, beside the analytic prefill-FLOPs ratio, on a slice of OpenVLA-7B's LLM at real width.

The slice: --layers (default 8) Llama-2-7B decoder layers (width 4096, 32 heads, MLP 11008), cut before layer
--prune-layer (3), on OpenVLA's 291-token query (BOS, 256 visual tokens, 34 prompt tokens ending in 29871),
float32 on this CPU, random weights (timing does not depend on them). Each round runs one query of every
setting in turn, so drift of a shared machine hits all settings alike; every ratio is taken within a round,
then the median over rounds. VLA-Pruner runs with its action history full (filled before round 0 through its
own select/observe on synthetic scores). "probes" is the time inside the engine's attention-probe function
(stage rows and action rows), "select" the pruner's own time (`select_ms`).

The FLOPs ratio assumes a pruned layer's matrix products run as fast per FLOP on its few rows as on the full
sequence; on a CPU streaming 4096-wide float32 weights from memory they do not (fewer rows, fewer FLOPs per
weight read). So each round also runs the dense slice on a sequence of each keep's kept length, and "ceiling"
is the prefill speedup the layers themselves allow: dense time over (layers before the cut at full length +
layers after it at the kept length, each a share of those dense runs). speedup/ceiling near 1 means the engine
adds nothing of its own; the gap between ceiling and FLOPs ratio is the hardware's.

    python scripts/bench_pruning.py --rounds 5 --threads 1
    python scripts/bench_pruning.py --width 512 --heads 8 --mlp 1376 --layers 32   # 7B depth, narrow

The LAST line reads `keep 0.25: prefill speedup/FLOPs ratio <r>, VLA-Pruner overhead vs FastV <p>%`: r is the
lower of FastV's and VLA-Pruner's prefill speedup divided by their FLOPs ratio, p is VLA-Pruner's whole-query
time over FastV's at the same keep, minus one.
"""
from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from argparse import RawDescriptionHelpFormatter
from dataclasses import dataclass

import torch
from threadpoolctl import threadpool_limits
from transformers import LlamaConfig

import vla_pruner.engine as engine_module
from vla_pruner.macs import prefill_macs
from evaluate.arguments import CommandParser, at_least
from vla_pruner.engine import PruningEngine
from vla_pruner.layout import SequenceLayout
from vla_pruner.models.llama import LlamaLM
from vla_pruner.models.openvla.model import ACTION_DIM
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner, check_prune_layer

KEEPS = (0.5, 0.25, 0.125)
VISUAL = 256
PROBE_FUNCTION = "attention_probs"  # the engine's one attention-probe computation, timed by wrapping it


@dataclass
class Setting:
    name: str
    keep: float
    engine: PruningEngine

    @property
    def label(self) -> str:
        return "dense" if self.name == "none" else f"{self.name} {self.keep}"


class ProbeClock:
    """Wraps the engine's probe function and sums its wall time (CPU: synchronous, so the clock is honest)."""

    def __init__(self):
        self.seconds = 0.0
        inner = getattr(engine_module, PROBE_FUNCTION)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(engine_module, PROBE_FUNCTION, timed)


def llm_slice(width: int, heads: int, mlp: int, layers: int) -> LlamaLM:
    config = LlamaConfig(vocab_size=32064, hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.no_grad():
        return LlamaLM(config).eval()


def fill_history(pruner, generator: torch.Generator) -> None:
    """Fill VLA-Pruner's action history as `window` dense warm-up queries would, through its own interface."""
    stage = pruner.plan.stages[0]
    while pruner.warming_up:
        pruner.select(StageInputs(stage=0, attention=[torch.rand(1, VISUAL, generator=generator)],
                                  visual_embeddings=[torch.randn(VISUAL, 8, generator=generator)]
                                  if stage.visual_embeddings else None))
        pruner.observe([torch.rand(VISUAL, generator=generator)])


@torch.inference_mode()
def run_query(setting: Setting, embeds: torch.Tensor, clock: ProbeClock, visual: int = VISUAL) -> dict:
    layout = SequenceLayout.openvla(embeds.shape[1], visual)
    clock.seconds = 0.0
    t0 = time.perf_counter()
    state = setting.engine.prefill(embeds, layout)  # and the first action token
    t1 = time.perf_counter()
    setting.engine.decode(state, ACTION_DIM)
    setting.engine.finish(state)
    t2 = time.perf_counter()
    trace = state.trace
    return {"prefill": 1e3 * (t1 - t0), "decode": 1e3 * (t2 - t1), "query": 1e3 * (t2 - t0),
            "select": sum(s.select_ms for s in trace.selections), "probes": 1e3 * clock.seconds,
            "tokens": trace.prefill_tokens, "warmup": any(s.warmup for s in trace.selections)}


def main() -> None:
    parser = CommandParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=at_least(1), default=5, help="timed rounds (one query per setting each)")
    parser.add_argument("--width", type=at_least(1), default=4096)
    parser.add_argument("--heads", type=at_least(1), default=32)
    parser.add_argument("--mlp", type=at_least(1), default=11008)
    parser.add_argument("--layers", type=at_least(2), default=8)
    parser.add_argument("--prune-layer", type=at_least(1), default=3)
    parser.add_argument("--prompt-tokens", type=at_least(2), default=35, help="non-visual tokens incl. BOS and 29871")
    parser.add_argument("--threads", type=at_least(1), default=None)
    args = parser.parse_args()
    if args.width % args.heads:
        parser.error(f"--width {args.width} is not a multiple of --heads {args.heads}")
    try:
        check_prune_layer(args.prune_layer, args.layers, option="--prune-layer ")
    except ValueError as error:
        parser.error(str(error))
    if args.threads:  # torch's, and NumPy's BLAS for the diversity filter's Gram matrix
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    lm = llm_slice(args.width, args.heads, args.mlp, args.layers)
    layout = ModelLayout(args.layers, (VISUAL,))
    generator = torch.Generator().manual_seed(1)
    settings = [Setting("none", 1.0, PruningEngine.dense(lm, layout))]
    for keep in KEEPS:
        for name in ("fastv", "vla"):
            pruner = build_pruner({"name": name, "prune_layer": args.prune_layer}, keep, layout)
            pruner.reset(seed=0, episode="bench")
            if name == "vla":
                fill_history(pruner, generator)
            settings.append(Setting(name, keep, PruningEngine(lm, pruner)))
    clock = ProbeClock()
    length = VISUAL + args.prompt_tokens
    kept_visual = sorted({s.engine.pruner.budgets[0] for s in settings[1:]}, reverse=True)  # each keep's budget
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU; LLM slice {args.layers} layers "
          f"x {args.width} ({args.heads} heads, MLP {args.mlp}), cut before layer {args.prune_layer}; {length} tokens "
          f"({VISUAL} visual), {ACTION_DIM} decoded; medians of {args.rounds} rounds after 1 untimed; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    runs: dict[str, list[dict]] = defaultdict(list)
    for round_index in range(args.rounds + 1):
        embeds = 0.02 * torch.randn(1, length, args.width, generator=generator)
        for setting in settings:
            result = run_query(setting, embeds, clock)
            if result["warmup"]:
                raise RuntimeError(f"{setting.label} ran a warm-up query: its history is not full")
            if round_index:
                runs[setting.label].append(result)
        for kept in kept_visual:  # the dense slice at the kept length: the ceiling's short layers
            kept_length = args.prompt_tokens + kept
            result = run_query(settings[0], embeds[:, :kept_length], clock, kept)
            if round_index:
                runs[f"dense {kept_length}"].append(result)
        print(f"round {round_index}/{args.rounds} done", flush=True)

    dense = runs["dense"]
    dense_macs = prefill_macs(dense[0]["tokens"], args.width, args.mlp)

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    def paired(label: str, over: str, key: str) -> float:
        """Median over rounds of runs[over][key] / runs[label][key]."""
        return statistics.median(o[key] / r[key] for o, r in zip(runs[over], runs[label]))

    def ceiling(label: str) -> float:
        """Median over rounds of the prefill speedup the layers allow at this setting's per-layer lengths."""
        tokens = runs[label][0]["tokens"]
        short = runs[f"dense {tokens[-1]}"] if tokens[-1] != length else dense
        return statistics.median(
            d["prefill"] * len(tokens) / sum(d["prefill"] if n == length else s["prefill"] for n in tokens)
            for d, s in zip(dense, short))

    print(f"\n| {'setting':<11} | prefill ms | decode ms | query ms | select ms | probes ms | prefill speedup "
          f"| FLOPs ratio | speedup/ratio | ceiling | speedup/ceiling |")
    print(f"|{'-' * 13}|-----------:|----------:|---------:|----------:|----------:|----------------:"
          f"|------------:|--------------:|--------:|----------------:|")
    efficiency = {}
    for setting in settings:
        label = setting.label
        ratio = dense_macs / prefill_macs(runs[label][0]["tokens"], args.width, args.mlp)
        speedup = paired(label, "dense", "prefill")
        efficiency[label] = speedup / ratio
        allowed = ceiling(label)
        print(f"| {label:<11} | {median(label, 'prefill'):>10.1f} | {median(label, 'decode'):>9.1f} "
              f"| {median(label, 'query'):>8.1f} | {median(label, 'select'):>9.2f} | {median(label, 'probes'):>9.2f} "
              f"| {speedup:>15.2f} | {ratio:>11.2f} | {speedup / ratio:>13.2f} | {allowed:>7.2f} "
              f"| {speedup / allowed:>15.2f} |")
    print("\nVLA-Pruner's whole-query time over FastV's (median of per-round ratios):")
    for keep in KEEPS:
        print(f"  keep {keep}: {100 * (paired(f'fastv {keep}', f'vla {keep}', 'query') - 1):+.2f}%")
    r = min(efficiency["fastv 0.25"], efficiency["vla 0.25"])
    p = 100 * (paired("fastv 0.25", "vla 0.25", "query") - 1)
    print(f"keep 0.25: prefill speedup/FLOPs ratio {r:.2f}, VLA-Pruner overhead vs FastV {p:.1f}%")


if __name__ == "__main__":
    main()
