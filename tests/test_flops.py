"""The analytic FLOPs against a hand count, the paper's number and torch's FlopCounterMode (2 FLOPs per MAC,
non-causal attention: the same convention as ours, so the counts must agree exactly)."""
from __future__ import annotations

import subprocess

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import LlamaConfig, LlamaModel

from evaluate.analysis.flops import model_dims
from vla_pruner.macs import layer_macs, prefill_macs, pruned_schedule
from vla_pruner.models.openvla.cost import DEFAULT_PROMPT_TOKENS, LlmDims, VlaDims, full_query_macs, llm_pass_macs, vit_dims
from vla_pruner.pruning import DEFAULT_PRUNE_LAYER, budget
from tests.conftest import run_in_one_interpreter


def query_schedule(dims: VlaDims, keep: float, prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
                   prune_layer: int = DEFAULT_PRUNE_LAYER) -> list[int]:
    """Per-layer prefill tokens of a query with one cut before layer K at retention `keep` (each image keeps
    round(keep * 256), the shared budget)."""
    dense = dims.sequence_length(prompt_tokens)
    kept = dims.sequence_length(prompt_tokens, budget(keep, 256))
    return pruned_schedule(dense, kept, dims.llm.num_layers, prune_layer)


# torch's counter has no formula for the CPU flash-attention kernel (it would count attention as 0 on a
# CPU); give it torch's own SDPA formula (non-causal: 2 * n_q * n_k * d MACs).
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}


def counted_macs(fn, *args) -> int:
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        fn(*args)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def test_hand_computed_case():
    # d=2, m=3: n=4 -> 4*4*4 + 2*16*2 + 3*4*2*3 = 64 + 64 + 72 = 200; n=2 -> 32 + 16 + 36 = 84
    assert layer_macs(4, 2, 3) == 200
    assert pruned_schedule(4, 2, num_layers=3, prune_layer=2) == [4, 4, 2]
    assert prefill_macs([4, 4, 2], d=2, m=3) == 200 + 200 + 84


def test_openvla_7b_dense_prefill_is_the_papers_1_906_t():
    dims = model_dims({"name": "openvla", "family": "openvla"})
    assert (dims.llm.hidden, dims.llm.intermediate, dims.llm.num_layers) == (4096, 11008, 32)
    schedule = query_schedule(dims, keep=1.0)
    assert schedule == [291] * 32
    assert prefill_macs(schedule, 4096, 11008) / 1e12 == pytest.approx(1.906, abs=1e-3)
    assert query_schedule(dims, keep=0.125) == [291] * 3 + [35 + 32] * 29


def small_llama(kv_heads: int) -> LlamaModel:
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=kv_heads, vocab_size=100, attn_implementation="sdpa")
    return LlamaModel(config).eval()


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_llm_prefill_and_cached_step_match_flop_counter(kv_heads):
    model = small_llama(kv_heads)
    llm = LlmDims(hidden=64, intermediate=96, num_layers=3, num_heads=4, num_kv_heads=kv_heads, vocab_size=100)
    n = 11
    with torch.no_grad():
        embeds = torch.randn(1, n, 64)
        macs = counted_macs(lambda: model(inputs_embeds=embeds))
        assert macs == 3 * llm_pass_macs(llm, n, n)
        if kv_heads == 4:  # multi-head attention: exactly the paper's formula
            assert macs == prefill_macs([n] * 3, d=64, m=96)
        cache = model(inputs_embeds=embeds, use_cache=True).past_key_values
        step = counted_macs(lambda: model(inputs_embeds=torch.randn(1, 1, 64), cache=cache, use_cache=True))
        assert step == 3 * llm_pass_macs(llm, 1, n + 1)


def test_vit_matches_flop_counter_up_to_the_second_to_last_block():
    vit = timm.create_model("vit_large_patch14_reg4_dinov2", pretrained=False, num_classes=0, img_size=56,
                            depth=3, embed_dim=48, num_heads=3).eval()
    dims = vit_dims(vit)
    assert (dims.num_patches, dims.prefix_tokens, dims.blocks_run) == (16, 5, 2)
    with torch.no_grad():
        macs = counted_macs(lambda: vit.forward_intermediates(
            torch.randn(1, 3, 56, 56), indices=[1], norm=False, stop_early=True, intermediates_only=True))
    assert macs == dims.macs()


def test_full_query_matches_flop_counter_on_the_project_openvla(fixtures_dir):
    """The project's OpenVLA (vision, projector, prefill, 6 cached decode steps) at the fixture's small dims."""
    from vla_pruner.models.openvla.checkpoint import read_config
    from vla_pruner.models.openvla.model import OpenVLA

    config, _ = read_config(fixtures_dir / "openvla_tiny_hf")
    torch.manual_seed(0)
    model = OpenVLA(config).eval()
    dims = model_dims({"name": "openvla_tiny", "family": "openvla", "checkpoint": str(fixtures_dir / "openvla_tiny_hf")})
    input_ids = torch.tensor([[1, 512, 613, 714, 29871]])  # BOS + 3 prompt tokens + the empty token
    with torch.no_grad():
        macs = counted_macs(model.predict_action_tokens, input_ids, torch.randn(1, 6, 224, 224))
    n = input_ids.shape[1] + 256
    assert macs == full_query_macs(dims, [n] * dims.llm.num_layers)["total"]


def test_decode_uses_each_layers_own_cache_length():
    dims = model_dims({"name": "openvla", "family": "openvla"})
    llm = dims.llm
    pruned = pruned_schedule(291, 99, 32, 3)
    counts = full_query_macs(dims, pruned)
    per_step = sum(llm_pass_macs(llm, 1, c + i + 1) for i in range(6) for c in pruned)
    assert counts["decode"] == per_step + 6 * llm.hidden * llm.vocab_size
    assert counts["total"] == counts["vision"] + counts["prefill"] + counts["decode"]


def test_a_checkpoint_path_not_on_this_machine_is_named_when_the_published_architecture_stands_in(caplog, tmp_path):
    """A recorded run whose checkpoint directory is gone still gets FLOPs (the report must read runs made on a
    cluster), but not silently: the warning names the path; hub ids and present directories say nothing."""
    gone = str(tmp_path / "deleted-checkpoint")
    with caplog.at_level("WARNING", logger="evaluate.analysis.flops"):
        dims = model_dims({"name": "my_oft", "family": "openvla_oft", "checkpoint": gone})
        assert dims.llm.num_layers == 32  # the official architecture stands in
        assert [r.getMessage() for r in caplog.records] == [
            f"model my_oft: checkpoint {gone} is not on this machine; its FLOPs count the openvla_oft family's "
            "published architecture"]
        caplog.clear()
        model_dims({"name": "openvla_oft", "family": "openvla_oft",
                    "checkpoints": {"libero_object": "moojink/openvla-7b-oft-finetuned-libero-object"}})
        model_dims({"name": "my_tiny", "family": "openvla_oft", "checkpoint": gone, "build_seed": 0})
        assert caplog.records == []


def test_a_missing_checkpoint_beside_a_present_one_says_nothing(caplog, fixtures_dir, tmp_path):
    """Per-suite checkpoints share the architecture: one on this machine gives the sizes, so nothing stands in."""
    checkpoints = {"libero_object": str(fixtures_dir / "openvla_tiny_hf"), "libero_10": str(tmp_path / "elsewhere")}
    with caplog.at_level("WARNING", logger="evaluate.analysis.flops"):
        dims = model_dims({"name": "openvla_tiny", "family": "openvla", "checkpoints": checkpoints})
    assert dims.llm.num_layers != 32 and caplog.records == []


CLI_CASES = [
    (["model=openvla", "pruner=fastv", "keep=0.5"], 4096, 11008, [291] * 3 + [35 + 128] * 29),
    (["model=openvla", "pruner=none", "keep=0.25"], 4096, 11008, [291] * 32),  # the dense model whatever keep says
    # progressive SparseVLM: cuts after layers 2, 6, 15 to 114, 51, 23 visual tokens (layer average 64 = 0.25 * 256)
    (["model=openvla", "pruner=sparsevlm", "pruner.mode=progressive", "keep=0.25"], 4096, 11008,
     [291] * 3 + [35 + 114] * 4 + [35 + 51] * 9 + [35 + 23] * 16),
    (["model=openvla_tiny", "keep=0.25", "prompt_tokens=20", "pruner=fastv", "pruner.prune_layer=2"], 128, 344,
     [276] * 2 + [20 + 64] * 6),
]


@pytest.fixture(scope="module")
def flops_commands(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """`python -m evaluate.flops <overrides>` of every case, in one interpreter (conftest.run_in_one_interpreter:
    each its own __main__, argv, output and exit status) rather than one start-up each."""
    commands = [["-m", "evaluate.flops", *overrides] for overrides, *_ in CLI_CASES]
    results = run_in_one_interpreter(commands, tmp_path_factory.mktemp("flops"))
    return {" ".join(overrides): result for (overrides, *_), result in zip(CLI_CASES, results)}


@pytest.mark.parametrize("overrides, d, m, schedule", CLI_CASES)
def test_cli_prints_pruned_count_last_without_weights(overrides, d, m, schedule, flops_commands):
    """Each case is still the command's own __main__ with its own argv, output and exit status (flops_commands): a
    wrong count, a missing dense count or a failed exit still fails its case."""
    result = flops_commands[" ".join(overrides)]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    dense = prefill_macs([schedule[0]] * len(schedule), d, m) / 1e12
    assert f"{dense:.6g} TMACs" in result.stdout  # the dense count alongside
    assert float(lines[-1]) == pytest.approx(prefill_macs(schedule, d, m) / 1e12, rel=1e-5)
