"""The Pruner interface: shared budget, registry and build, option errors, plans, selection records."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from vla_pruner.pruning import (
    PRUNERS, ModelLayout, Selection, StageInputs, budget, build_pruner, hex_to_indices, indices_to_hex,
    pruner_config, top_k,
)

OPENVLA = ModelLayout(num_layers=32, image_tokens=(256,))
OFT = ModelLayout(num_layers=32, image_tokens=(256, 256))
NAMES = ("none", "random", "fastv", "sparsevlm", "vla", "divprune", "vla_cache")


def test_registry_holds_every_pruner():
    assert set(NAMES) <= set(PRUNERS)


@pytest.mark.parametrize("keep, expected", [(0.5, 128), (0.25, 64), (0.125, 32), (1.0, 256), (0.1, 26)])
def test_budget_is_round_keep_times_m(keep, expected):
    assert budget(keep, 256) == expected


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5, 0.001])
def test_budget_rejects_keep_outside_range_or_keeping_nothing(keep):
    with pytest.raises(ValueError, match="keep"):
        budget(keep, 256)


def test_budgets_are_per_image():
    pruner = build_pruner({"name": "fastv"}, keep=0.25, layout=OFT)
    assert pruner.budgets == (64, 64)


def test_top_k_breaks_ties_towards_lower_index():
    assert top_k(torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0]), 2).tolist() == [1, 2]


def test_unknown_pruner_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown pruner 'fastvv'.*fastv.*sparsevlm.*vla"):
        build_pruner({"name": "fastvv"}, keep=0.5, layout=OPENVLA)


@pytest.mark.parametrize("cfg, message", [
    ({"name": "vla", "criterion": "both"}, r"criterion='both'.*'dual', 'semantic_only', 'action_only', 'fusion'"),
    ({"name": "vla", "warmup": "none"}, r"no option\(s\) warmup \(folded into dense_warmup: warmup=dense is "
                                        r"dense_warmup=<window> \(the default\), warmup=semantic is dense_warmup=0\)"),
    ({"name": "fastv", "dense_warmup": -1}, r"dense_warmup=-1 must be 0 or more"),
    ({"name": "vla_cache", "dense_warmup": 3}, r"'vla_cache' has no option\(s\) dense_warmup"),
    ({"name": "vla", "temporal_order": "newest"}, r"temporal_order='newest'.*'paper', 'reversed'"),
    ({"name": "vla", "semantic_source": "rows"}, r"semantic_source='rows'.*'prefill', 'last', 'text'"),
    ({"name": "vla", "action_layers": "all"}, r"action_layers='all'.*later_half"),
    ({"name": "vla", "window": 0}, r"window=0"),
    ({"name": "vla", "gamma": 1.5}, r"gamma=1.5"),
    ({"name": "fastv", "source": "first"}, r"source='first'.*'last', 'prefill'"),
    ({"name": "sparsevlm", "mode": "multi"}, r"mode='multi'.*'single', 'progressive'"),
    ({"name": "fastv", "window": 3}, r"'fastv' has no option\(s\) window; its options: dense_warmup, prune_layer, source"),
])
def test_bad_options_fail_naming_value_and_choices(cfg, message):
    with pytest.raises(ValueError, match=message):
        pruner_config(cfg)


@pytest.mark.parametrize("cfg, message", [
    ({"name": "vla", "prune_layer": 0}, r"prune_layer=0 must be in 1..31"),
    ({"name": "fastv", "prune_layer": 32}, r"prune_layer=32"),
    ({"name": "vla", "action_layers": [40]}, r"action_layers=\[40\] outside 0..31"),
])
def test_options_that_do_not_fit_the_model_fail(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_pruner(cfg, keep=0.5, layout=OPENVLA)


def test_builds_from_hydra_config_and_typed_config():
    cfg = OmegaConf.create({"name": "vla", "action_layers": [15], "semantic_source": "last"})
    pruner = build_pruner(cfg, keep=0.5, layout=OPENVLA)
    assert pruner.plan.action_layers == (15,)
    assert pruner.plan.stages[0].rows == "last"
    again = build_pruner(pruner.config, keep=0.5, layout=OPENVLA)
    assert again.config == pruner.config and again.name == "vla"


@pytest.mark.parametrize("name", NAMES)
def test_keep_one_means_a_dense_plan(name):
    """At keep=1.0 every pruner keeps all tokens: the engine runs the unmodified model."""
    pruner = build_pruner({"name": name}, keep=1.0, layout=OFT)
    assert pruner.plan.stages == () and pruner.plan.action_layers == ()


def test_none_ignores_keep():
    pruner = build_pruner({"name": "none"}, keep=0.125, layout=OPENVLA)
    assert pruner.plan.stages == () and pruner.budgets == (256,)


def test_select_reports_missing_inputs_clearly():
    pruner = build_pruner({"name": "vla", "dense_warmup": 0}, keep=0.5, layout=OPENVLA)
    with pytest.raises(ValueError, match="vla stage 0 needs attention, visual_embeddings"):
        pruner.select(StageInputs(stage=0))
    with pytest.raises(ValueError, match="stage 1 not in"):
        pruner.select(StageInputs(stage=1))


def test_selection_record_is_compact_json_and_round_trips():
    kept = torch.tensor([0, 5, 255])
    selection = Selection(kept=[kept], num_rows=[256], warmup=True, select_ms=0.123456)
    record = json.loads(json.dumps(selection.to_record()))
    assert record["kept"] == [3] and record["warmup"] is True and record["select_ms"] == 0.1235
    assert len(record["kept_mask"][0]) == 64
    assert hex_to_indices(record["kept_mask"][0]) == [0, 5, 255]
    assert hex_to_indices(indices_to_hex(torch.arange(256), 256)) == list(range(256))


def test_select_times_itself_and_describe_is_json():
    pruner = build_pruner({"name": "fastv"}, keep=0.5, layout=OPENVLA)
    selection = pruner.select(StageInputs(stage=0, attention=[torch.rand(1, 256)]))
    assert selection.select_ms > 0 and not selection.is_dense
    described = json.loads(json.dumps(pruner.describe()))
    assert described["stage_layers"] == [2] and described["source"] == "last"


def engine_query(pruner, layout, width=8, text_rows=5, generator=None):
    """One policy query the way the engine drives a pruner: compute exactly what each stage asks for,
    apply the selection (kept rows, then merged tokens), observe action attention of the tokens present."""
    generator = generator or torch.Generator().manual_seed(0)
    rows = list(layout.image_tokens)
    selections = []
    for index, stage in enumerate(pruner.plan.stages):
        attention_rows = {"prefill": 1, "last": 1, "text": text_rows}.get(stage.rows)
        selection = pruner.select(StageInputs(
            stage=index,
            attention=[torch.rand(attention_rows, n, generator=generator) for n in rows] if stage.rows else None,
            visual_embeddings=[torch.randn(n, width, generator=generator) for n in rows]
            if stage.visual_embeddings else None,
            text_embeddings=torch.randn(text_rows, width, generator=generator) if stage.text_embeddings else None,
            hidden_states=[torch.randn(n, width, generator=generator) for n in rows] if stage.hidden_states else None,
            frames=[torch.randint(0, 256, (224, 224, 3), generator=generator, dtype=torch.uint8).numpy()
                    for _ in rows] if stage.frames else None,
        ))
        selections.append(selection)
        merged = selection.merged or [None] * len(rows)
        rows = [len(k) + (len(m.origin) if m is not None else 0) for k, m in zip(selection.kept, merged)]
    if pruner.plan.action_layers:
        pruner.observe([torch.rand(n, generator=generator) for n in rows])
    return selections, rows


@pytest.mark.parametrize("cfg", [{"name": n} for n in NAMES] + [{"name": "sparsevlm", "mode": "progressive"},
                                                              {"name": "vla", "dense_warmup": 0},
                                                              {"name": "divprune", "prune_layer": 3}])
@pytest.mark.parametrize("keep", [0.5, 0.125])
def test_every_pruner_meets_its_budget_through_the_engine_loop(cfg, keep):
    pruner = build_pruner(cfg, keep=keep, layout=OFT)
    pruner.reset(seed=7, episode=0)
    for step in range(5):  # past any warm-up
        selections, rows = engine_query(pruner, OFT, generator=torch.Generator().manual_seed(step))
        json.dumps([s.to_record() for s in selections])
    if cfg["name"] == "none":
        assert selections == [] and rows == [256, 256]
    elif cfg["name"] == "vla_cache":  # reuses, never deletes: with no previous query handed to it, all recomputed
        assert [s.kept for s in selections] and rows == [256, 256] and all(s.warmup for s in selections)
    elif cfg.get("mode") == "progressive":  # the budget is met on average over layers (tested elsewhere)
        assert rows == [counts[-1] for counts in pruner.counts]
    else:
        assert rows == [round(keep * 256)] * 2
        assert all(torch.equal(k, k.sort().values) for s in selections for k in s.kept)


@pytest.mark.parametrize("name", ["fastv", "random", "sparsevlm", "divprune", "vla"])
def test_dense_warmup_runs_the_first_queries_of_every_episode_unpruned(name):
    pruner = build_pruner({"name": name, "dense_warmup": 2}, keep=0.25, layout=OFT)
    generator = torch.Generator().manual_seed(0)
    for episode in range(2):  # reset starts the count again
        pruner.reset(seed=7, episode=episode)
        warm = []
        for _ in range(4):
            selections, rows = engine_query(pruner, OFT, generator=generator)
            warm.append(selections[0].warmup)
            assert rows == ([256, 256] if warm[-1] else [64, 64])
            assert all(s.warmup == warm[-1] for s in selections)
        assert warm == [True, True, False, False]
