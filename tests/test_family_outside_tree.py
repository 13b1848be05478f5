"""A model family defined outside the project (here, in this test module) runs through the FLOPs command and the
run's pre-flight check with no edit of the harness: its record is all the project reads (issue 28)."""
import pytest

from evaluate import flops
from evaluate.config import validate
from evaluate.policies import POLICIES
from vla_pruner import families
from vla_pruner.families import ModelFamily, register_family
from vla_pruner.models.openvla.action_tokenizer import select_action_stats
from vla_pruner.models.openvla.config import OFFICIAL_OPENVLA_CONFIG
from vla_pruner.models.openvla.cost import openvla_cost
from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
from tests.conftest import composed

# An OpenVLA-architecture family that reads and decodes as OpenVLA does (so it names OpenVLA's policy adapter),
# with its own cut: its record says K = 2, which no harness table knows.
TOY = ModelFamily(
    name="toy_vla", num_images=1, decode_steps=6, prefill_logit_rows=1, extra_tokens=0, part_files=(),
    default_unnorm_key=lambda suite: suite, select_stats=select_action_stats,
    tiny_norm_stats=lambda: TINY_CONFIG["norm_stats"], official_config=lambda: OFFICIAL_OPENVLA_CONFIG,
    tiny_config=lambda: TINY_CONFIG, cost=openvla_cost, policy="openvla", pruner_defaults={"prune_layer": 2},
)
TOY_MODEL = ["model=openvla_tiny", "model.name=toy_tiny", "model.family=toy_vla"]  # its YAML, as overrides


@pytest.fixture
def toy():
    register_family(TOY)
    try:
        yield TOY
    finally:
        families._REGISTERED.pop(TOY.name, None)


def test_the_flops_command_counts_it_with_its_own_defaults(toy, capsys):
    flops.main([*TOY_MODEL, "pruner=fastv", "keep=0.25"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model toy_tiny: LLM d=128")
    assert "cut before layer K=2, 99 tokens from there" in out[3]  # 35 prompt + 64 kept, from the record's K


def test_a_run_of_it_is_composed_and_checked_as_any_other(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tmp_path / "cache"))
    cfg = composed(*TOY_MODEL, "pruner=vla", "keep=0.25", f"output_root={tmp_path}")
    assert cfg.pruner.prune_layer == 2 and cfg.run_name.startswith("toy_tiny/")
    validate(cfg, POLICIES)  # the checkpoint it will be built as, its statistics, the pruner on its layout


def test_an_unregistered_family_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit, match="error: model 'toy_tiny' has family 'toy_vla'; known: openvla, "
                                         "openvla_oft, pi0"):
        flops.main([*TOY_MODEL, "pruner=fastv", "keep=0.25"])
