"""pi0's analytic counts: the expert's and the vision tower's equal torch's own FLOP counter on the tiny model
(2 FLOPs per MAC), the prefix follows the paper's convention, and the CLI prints the real pi0's numbers."""
import subprocess
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from evaluate.analysis.flops import TERA, layer_macs
from evaluate.analysis.pi0_flops import expert_macs, pi0_macs, prefix_schedule, vision_macs
from vla_pruner.models.pi0 import Pi0, PrefixCache
from vla_pruner.models.pi0_config import REAL_PI0
from vla_pruner.models.pi0_tiny import TINY_PI0
from tests.conftest import REPO


def counted_macs(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def test_expert_and_vision_counts_equal_torchs_counter():
    torch.manual_seed(0)
    model = Pi0(TINY_PI0).eval()
    model.vision.config._attn_implementation = "eager"  # torch's counter does not see CPU SDPA's products
    c = TINY_PI0
    keys = [c.prefix_length, c.prefix_length, 100]  # a cut before the last layer
    cache = PrefixCache(offset=torch.tensor([500]))
    for n in keys:
        cache.keys.append(torch.randn(1, 1, n, c.vlm.head_dim))
        cache.values.append(torch.randn(1, 1, n, c.vlm.head_dim))
        cache.key_valid.append(torch.ones(1, n, dtype=torch.bool))
    with torch.inference_mode():
        step = counted_macs(lambda: model.velocity(cache, torch.zeros(1, 32), torch.randn(1, 50, 32), torch.ones(1)))
        images = counted_macs(lambda: model.embed_images(torch.zeros(1, c.num_cameras, 3, 224, 224)))
    assert step * c.num_steps == expert_macs(c, keys)
    assert images == vision_macs(c)


def test_prefix_is_the_papers_convention_with_the_cut():
    schedule = prefix_schedule(REAL_PI0, 128, 3)
    assert schedule == [816] * 3 + [2 * 128 + 48] * 15
    assert pi0_macs(REAL_PI0).prefix == 18 * layer_macs(816, 2048, 16384)
    lean = prefix_schedule(REAL_PI0, None, 3, empty_rows=False)
    assert lean == [560] * 18


def test_cli_prints_the_real_pi0_count():
    out = subprocess.run([sys.executable, "-m", "evaluate.flops", "model=pi0", "keep=0.25"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "VLM d=2048 m=16384 L=18, expert d=1024 m=4096, SigLIP 1152 x 27" in lines[0]
    pruned = pi0_macs(REAL_PI0, 64, 3)
    assert float(lines[-1]) == float(format((pruned.prefix + pruned.expert) / TERA, ".6g"))
