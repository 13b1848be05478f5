"""Per-query latency of OpenVLA's stages (vision / prefill / decode), median over N queries, on this machine.

Two random-weight models, no checkpoint needed:
  tiny       the project's default model (configs/model/openvla_tiny.yaml)
  7b-tokens  OpenVLA-7B's token counts and depths (256 visual tokens + a LIBERO-length prompt, 32 Llama
             layers, ViTs of depth 24 and 27) at reduced width, to see where a 7B-shaped query spends time.

    python scripts/bench_openvla_latency.py --queries 20
"""
from __future__ import annotations

import os
from argparse import RawDescriptionHelpFormatter
import statistics
import time

import torch

from vla_pruner.models.openvla.model import ACTION_DIM, EMPTY_TOKEN_ID, OpenVLA
from vla_pruner.models.openvla.tiny import build_tiny_model, seven_b_shaped
from evaluate.arguments import CommandParser, at_least


def bench(model: OpenVLA, prompt_tokens: int, queries: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds per stage over `queries` queries on random images and prompts."""
    times: dict[str, list[float]] = {"vision": [], "prefill": [], "decode": [], "total": []}
    engine = model.dense_engine()
    for i in range(warmup + queries):
        pixels = torch.randn(1, 6, 224, 224)
        words = torch.randint(3, 200, (1, prompt_tokens - 2))
        input_ids = torch.cat([torch.tensor([[1]]), words, torch.tensor([[EMPTY_TOKEN_ID]])], dim=1)
        with torch.inference_mode():
            t0 = time.perf_counter()
            visual = model.encode_image(pixels)
            t1 = time.perf_counter()
            embeds = model.multimodal_embeds(input_ids, visual)
            state = engine.prefill(embeds, model.sequence_layout(embeds.shape[1]))
            t2 = time.perf_counter()
            engine.decode(state, ACTION_DIM)
            t3 = time.perf_counter()
        if i >= warmup:
            for stage, ms in zip(times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                times[stage].append(1e3 * ms)
    return {stage: statistics.median(values) for stage, values in times.items()}


def main() -> None:
    parser = CommandParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=at_least(1), default=20, help="timed queries per model (after 2 warm-up ones)")
    parser.add_argument("--prompt-tokens", type=at_least(2), default=30,
                        help="text tokens incl. BOS and 29871 (LIBERO prompts: 20-38 with the Llama-2 tokenizer)")
    parser.add_argument("--llm-width", type=at_least(64), default=512, help="hidden size of the 7b-tokens model's Llama")
    parser.add_argument("--vit-width", type=at_least(64), default=128, help="embed dim of the 7b-tokens model's ViTs")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    for option, width in (("--llm-width", args.llm_width), ("--vit-width", args.vit_width)):
        if width % 64:
            parser.error(f"{option} {width} is not a multiple of 64 (the heads of the 7b-tokens model are 64 wide)")
    if args.threads:
        torch.set_num_threads(args.threads)

    models = {"tiny": build_tiny_model(0), "7b-tokens": seven_b_shaped(args.llm_width, args.vit_width)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, "
          f"sequence = 256 visual + {args.prompt_tokens} text tokens, 7 decoded; median of {args.queries} queries")
    print("load average at start (other processes share the CPU): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'model':<11} {'LLM':<22} {'vision ms':>10} {'prefill ms':>11} {'decode ms':>10} {'total ms':>9}")
    for name, model in models.items():
        llm = model.language_model.config
        shape = f"{llm.num_hidden_layers}L x {llm.hidden_size}"
        r = bench(model, args.prompt_tokens, args.queries)
        print(f"{name:<11} {shape:<22} {r['vision']:>10.1f} {r['prefill']:>11.1f} {r['decode']:>10.1f} {r['total']:>9.1f}")


if __name__ == "__main__":
    main()
