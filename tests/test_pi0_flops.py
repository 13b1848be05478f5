"""pi0's analytic counts: the expert's and the vision tower's equal torch's own FLOP counter on the tiny model
(2 FLOPs per MAC), the prefix follows the paper's convention, and the CLI prints the real pi0's numbers."""
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from evaluate.analysis.flops import main
from vla_pruner.macs import TERA, layer_macs
from vla_pruner.models.pi0.cost import expert_macs, pi0_macs, prefix_schedule, vision_macs
from vla_pruner.models.pi0.model import Pi0, PrefixCache
from vla_pruner.models.pi0.config import REAL_PI0
from vla_pruner.models.pi0.tiny import TINY_PI0
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
    assert images == vision_macs(c, empty_rows=True)  # all three slots encoded


def test_prefix_is_the_papers_convention_with_the_cut():
    """Dense = the two valid cameras + 48 language slots (560): the empty camera is left out, not computed."""
    schedule = prefix_schedule(REAL_PI0, 128, 3)
    assert schedule == [560] * 3 + [2 * 128 + 48] * 15
    assert pi0_macs(REAL_PI0).prefix == 18 * layer_macs(560, 2048, 16384)
    assert prefix_schedule(REAL_PI0, 128, 3, empty_rows=True) == [816] * 3 + [2 * 128 + 48] * 15
    assert 100 * pi0_macs(REAL_PI0, 128, 3).prefix / pi0_macs(REAL_PI0).prefix == pytest.approx(60.9, abs=1.5)


def flops_cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluate.flops", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_cli_prefix_ratio_at_keep_half_is_the_papers():
    out = flops_cli("model=pi0", "pruner=vla", "keep=0.5")
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stdout.splitlines() if x.startswith("prefix  dense / pruned")]
    ratio = float(line.split("(")[1].split("%")[0])
    assert ratio == pytest.approx(60.9, abs=1.5), line


def flops_main(capsys, *overrides: str) -> str:
    """The command's stdout, run in this process: `python -m evaluate.flops ARGS` is `main(ARGS)` and nothing else
    (evaluate/flops.py), so this is the command without a new interpreter's imports (seven of them cost this test
    most of its minute); the command as a process is run by the two tests around this one and, for its one-line
    errors, by tests/test_bad_inputs.py::test_flops_cli_error_is_one_line_without_traceback."""
    main(list(overrides))
    return capsys.readouterr().out


def test_cli_builds_the_pruner_as_a_pi0_run_does(capsys):
    """pruner=none is dense whatever keep says; progressive SparseVLM is counted by its stages; what a pi0 run
    refuses (VLA-Cache, renumbered positions, a cut outside the VLM) is refused in one error line (the SystemExit
    message the interpreter prints as the command's stderr: any other exception fails this test)."""
    dense = flops_main(capsys, "model=pi0", "pruner=none", "keep=0.5")
    expected = pi0_macs(REAL_PI0)
    assert float(dense.splitlines()[-1]) == float(format((expected.prefix + expected.expert) / TERA, ".6g"))
    assert "no cut" in dense
    progressive = flops_main(capsys, "model=pi0", "pruner=sparsevlm", "pruner.mode=progressive", "keep=0.5")
    assert progressive.count("cut before layer") == 3
    single = flops_main(capsys, "model=pi0", "pruner=sparsevlm", "keep=0.5")
    assert float(progressive.splitlines()[-1]) != float(single.splitlines()[-1])
    for overrides, message in [
            (["pruner=vla_cache"], "error: pruner 'vla_cache': VLA-Cache reuses"),
            (["pruner=divprune", "pruner.prune_layer=0", "pruner.positions=renumbered"],
             "error: pruner divprune: pi0's pruned prefix keeps the original position ids"),
            (["pruner=fastv", "pruner.prune_layer=18"], "error: pruner fastv: prune_layer=18 must be in 1..17"),
            (["pruner=vla", "pruner.semantic_source=rows"], "error: pruner vla: semantic_source='rows' is not valid")]:
        with pytest.raises(SystemExit) as exit_:
            flops_main(capsys, "model=pi0", "keep=0.5", *overrides)
        error = str(exit_.value.code)
        assert exit_.value.code not in (None, 0) and capsys.readouterr().out == ""
        assert "\n" not in error.strip() and error.startswith(message), error


def test_cli_prints_the_real_pi0_count():
    out = flops_cli("model=pi0", "pruner=vla", "keep=0.25")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "VLM d=2048 m=16384 L=18, expert d=1024 m=4096, SigLIP 1152 x 27" in lines[0]
    pruned = pi0_macs(REAL_PI0, 64, 3)
    assert float(lines[-1]) == float(format((pruned.prefix + pruned.expert) / TERA, ".6g"))
