"""The pruner registry: built-in and entry-point pruners are imported by name, never by import side effects, and a
pruner defined outside the project (here, in this test module) registers and runs through the engine."""
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from transformers import LlamaConfig

from vla_pruner.engine import PruningEngine
from vla_pruner.layout import SequenceLayout
from vla_pruner.models.llama import LlamaLM
from vla_pruner.pruning import (
    PRUNERS, ModelLayout, PrunePlan, PrunerConfig, Selection, SingleCutPruner, StageInputs, build_pruner,
    register_pruner,
)

LAYERS, VISUAL, TEXT = 4, 16, 6  # a small causal LLM; sequence [BOS, 16 visual, 6 text]


@dataclass(frozen=True)
class KeepFirstConfig(PrunerConfig):
    prune_layer: int = 2


@register_pruner
class KeepFirst(SingleCutPruner):
    """Keeps each image's first tokens, asks for the last row's attention and observes action attention."""

    name = "test_keep_first"
    Config = KeepFirstConfig

    def __init__(self, config, keep, layout):
        super().__init__(config, keep, layout)
        self.seen: list[torch.Tensor] = []
        self.observed: list[list[torch.Tensor]] = []

    def make_plan(self) -> PrunePlan:
        return PrunePlan(stages=(self.cut(rows="last"),), action_layers=(LAYERS - 1,))

    def choose(self, inputs: StageInputs) -> Selection:
        self.seen.append(inputs.attention[0])
        return Selection(kept=[torch.arange(k) for k in self.budgets], num_rows=self.rows_per_image(inputs))

    def observe(self, action_attention):
        self.observed.append(list(action_attention))


@pytest.fixture(scope="module")
def small_lm():
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaLM(config).eval()


def test_registered_pruner_is_listed_and_names_stay_unique():
    assert "test_keep_first" in PRUNERS and PRUNERS["test_keep_first"] is KeepFirst
    assert {"none", "vla", "fastv", "random", "sparsevlm", "divprune", "vla_cache"} <= set(PRUNERS)
    with pytest.raises(ValueError, match="'test_keep_first' registered twice"):
        register_pruner(KeepFirst)
    taken = type("Taken", (KeepFirst,), {"name": "vla"})  # a declared name counts before it is imported
    with pytest.raises(ValueError, match="'vla' registered twice"):
        register_pruner(taken)


@torch.inference_mode()
def test_a_pruner_from_a_test_module_runs_through_the_engine(small_lm):
    pruner = build_pruner({"name": "test_keep_first"}, keep=0.25, layout=ModelLayout(LAYERS, (VISUAL,)))
    assert pruner.plan.stages[0].layer == 1  # the single-cut base: K - 1
    engine = PruningEngine(small_lm, pruner)
    length = 1 + VISUAL + TEXT
    state = engine.prefill(0.1 * torch.randn(1, length, 32), SequenceLayout.openvla(length, VISUAL))
    tokens = engine.decode(state, 3)
    engine.finish(state)
    assert tokens.shape == (1, 3)
    [seen] = pruner.seen
    assert seen.shape == (1, VISUAL) and 0 < float(seen.sum()) < 1  # the last row's share of attention
    assert state.trace.selections[0].kept[0].tolist() == [0, 1, 2, 3]
    assert state.trace.prefill_tokens == [length] * 2 + [length - 12] * 2 and state.trace.kept_visual == 4
    [[action]] = pruner.observed
    assert torch.all(action[:4] > 0) and torch.all(action[4:] == 0)  # dropped tokens get no attention


@pytest.mark.parametrize("name", ["fastv", "random", "sparsevlm", "vla", "test_keep_first"])
def test_single_cut_pruners_cut_before_prune_layer_and_check_it(name):
    layout = ModelLayout(num_layers=8, image_tokens=(16,))
    pruner = build_pruner({"name": name, "prune_layer": 5}, keep=0.5, layout=layout)
    assert [s.layer for s in pruner.plan.stages] == [4]
    for bad in (0, 8):
        with pytest.raises(ValueError, match=rf"^prune_layer={bad} must be in 1..7 for a model with 8 layers$"):
            build_pruner({"name": name, "prune_layer": bad}, keep=0.5, layout=layout)


def test_progressive_sparsevlm_does_not_use_prune_layer():
    layout = ModelLayout(num_layers=32, image_tokens=(256,))
    pruner = build_pruner({"name": "sparsevlm", "mode": "progressive", "prune_layer": 99}, keep=0.5, layout=layout)
    assert [s.layer for s in pruner.plan.stages] == [2, 6, 15]


def test_pruners_are_imported_by_name_only():
    """In a fresh interpreter: `vla` needs nothing of baselines; `fastv` (an entry point) imports its module and
    no other baseline."""
    code = (
        "import sys\n"
        "import vla_pruner\n"
        "layout = vla_pruner.ModelLayout(32, (256,))\n"
        "pruner = vla_pruner.build_pruner({'name': 'vla'}, 0.25, layout)\n"
        "assert pruner.name == 'vla' and pruner.plan.stages[0].layer == 2\n"
        "assert 'baselines' not in sys.modules, sorted(m for m in sys.modules if m.startswith('baselines'))\n"
        "assert vla_pruner.build_pruner({'name': 'fastv'}, 0.25, layout).name == 'fastv'\n"
        "assert 'baselines.fastv' in sys.modules and 'baselines.sparsevlm' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
