"""Pruner defaults that depend on the model family (issue 11): OpenVLA-OFT prunes after 4 layers and scores FastV
with all prefill rows, as the VLA-Pruner repository's OFT port does; the family records
(`pruner_defaults`, `model_pruner_defaults` in vla_pruner/models/<family>/family.py) feed configs, run names, table labels, the FLOPs CLI and what a run records."""
import pytest
from omegaconf import OmegaConf

from evaluate.analysis import flops
from evaluate.analysis.labels import method_label
from evaluate.config import pruner_tag
from tests.conftest import composed


@pytest.mark.parametrize("model, prune_layer, source", [("openvla_tiny", 3, "last"), ("openvla", 3, "last"),
                                                        ("openvla_oft_tiny", 4, "prefill"),
                                                        ("openvla_oft", 4, "prefill"),
                                                        ("openvla_oft_small", 1, "prefill")])
def test_defaults_come_from_the_model_family(model, prune_layer, source):
    cfg = composed(f"model={model}", "pruner=fastv", "keep=0.25")
    assert (cfg.pruner.prune_layer, cfg.pruner.source) == (prune_layer, source)
    for pruner in ("vla", "random", "sparsevlm"):
        assert composed(f"model={model}", f"pruner={pruner}").pruner.prune_layer == prune_layer
    assert cfg.run_name == f"{model}/libero_object/fastv-keep0.25/seed7"  # the model's defaults: no tag


def test_an_explicit_value_overrides_the_model_default_and_names_the_run():
    cfg = composed("model=openvla_oft_tiny", "pruner=fastv", "pruner.prune_layer=3", "pruner.source=last")
    assert cfg.pruner.prune_layer == 3 and cfg.pruner.source == "last"
    assert "/fastv,source=last,prune_layer=3-keep" in cfg.run_name
    # the same values are the defaults of OpenVLA: no tag there
    assert pruner_tag({"name": "fastv", "source": "last", "prune_layer": 3}, "openvla") == "fastv"
    assert pruner_tag({"name": "fastv", "source": "last", "prune_layer": 3}, "openvla_oft") == \
        "fastv,source=last,prune_layer=3"


def test_the_run_records_the_effective_values():
    """What a run builds (and writes to summary.json through the policy's describe())."""
    from vla_pruner.pruning import build_pruner
    from vla_pruner.pruning import ModelLayout

    cfg = composed("model=openvla_oft_tiny", "pruner=vla", "keep=0.25")
    pruner = build_pruner(OmegaConf.to_container(cfg.pruner, resolve=True), cfg.keep,
                                    ModelLayout(num_layers=8, image_tokens=(256, 256)))
    described = pruner.describe()
    assert described["prune_layer"] == 4 and described["stage_layers"] == [3]


def test_table_labels_follow_the_model_defaults():
    oft = {"model": {"family": "openvla_oft"}, "pruner": {"name": "fastv", "source": "prefill", "prune_layer": 4}}
    assert method_label(oft) == "FastV"
    openvla = {"model": {"family": "openvla"}, "pruner": {"name": "fastv", "source": "prefill", "prune_layer": 4}}
    assert method_label(openvla) == "FastV (source=prefill, prune_layer=4)"


def test_flops_cli_uses_the_oft_defaults(capsys):
    flops.main(["model=openvla_oft", "keep=0.25", "pruner=vla"])
    out = capsys.readouterr().out.splitlines()
    assert "cut before layer K=4, 221 tokens from there" in out[3]
    assert float(out[-1]) == pytest.approx(1.76524, abs=1e-5)  # K=3 would give 1.68493


@pytest.mark.parametrize("model, semantic_source, temporal_order", [("openvla_tiny", "last", "reversed"),
                                                                    ("openvla_oft_tiny", "prefill", "paper")])
def test_released_preset_follows_each_models_release(model, semantic_source, temporal_order):
    """The OpenVLA scripts and the later OpenVLA-OFT port of the released code differ in two switches."""
    cfg = composed(f"model={model}", "pruner=vla_released", "keep=0.25")
    assert (cfg.pruner.semantic_source, cfg.pruner.temporal_order) == (semantic_source, temporal_order)
    assert cfg.pruner.selection_dtype == "bfloat16" and cfg.pruner.action_layers == "released"
    assert "/vla_released-keep0.25/" in cfg.run_name  # named by its preset, on either model
    identity = {"model": {"family": OmegaConf.select(cfg, "model.family")},
                "pruner": OmegaConf.to_container(cfg.pruner, resolve=True)}
    assert method_label(identity) == "VLA-Pruner (as released)"
