"""`pruner=vla_released`: VLA-Pruner as the public code runs it (layer-15 action attention at the model's depth,
bfloat16 selection), beside the paper's defaults of `pruner=vla`."""
import dataclasses

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from evaluate.config import CONFIG_DIR
from vla_pruner.diversity import select_diverse
from vla_pruner.method import VLAPrunerConfig
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner, pruner_config, top_k

M = 64
LAYOUT = ModelLayout(num_layers=8, image_tokens=(M,))
RELEASED = {"criterion": "dual", "alpha": 0.5, "redundancy_filter": True, "window": 3, "gamma": 0.8,
            "prune_layer": 3, "semantic_source": "last", "action_layers": "released", "dense_warmup": 3,
            "temporal_order": "reversed", "selection_dtype": "bfloat16"}


def composed_pruner(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg.pruner, resolve=True)


def make(keep=0.25, layout=LAYOUT, **options):
    return build_pruner({"name": "vla", **options}, keep=keep, layout=layout)


def stage(semantic, embeddings=None):
    if embeddings is None:
        embeddings = torch.randn(len(semantic), 8, generator=torch.Generator().manual_seed(1))
    return StageInputs(stage=0, attention=[semantic[None]], visual_embeddings=[embeddings])


def near_ties(seed: int) -> torch.Tensor:
    """Scores on a few levels, each spread by less than bfloat16 resolves (2^-8 relative): distinct in
    float32, tied in bfloat16."""
    generator = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 6, (M,), generator=generator).float()
    return (1.0 + levels / 8) * (1 + 1e-3 * torch.rand(M, generator=generator))


def test_preset_composes_and_sets_every_switch_to_the_release():
    raw = OmegaConf.load(CONFIG_DIR / "pruner" / "vla_released.yaml")
    fields = {f.name for f in dataclasses.fields(VLAPrunerConfig)}
    assert set(raw) == fields | {"name"}, "the preset must set every option explicitly"
    options = composed_pruner("pruner=vla_released")
    assert options == {"name": "vla", **RELEASED}
    config = pruner_config(options)
    paper = pruner_config(composed_pruner("pruner=vla"))
    assert config == VLAPrunerConfig(**RELEASED)
    differs = {f for f in fields if getattr(config, f) != getattr(paper, f)}
    assert differs == {"semantic_source", "action_layers", "temporal_order", "selection_dtype"}
    assert paper.selection_dtype == "float32" and paper.action_layers == "later_half"


def test_preset_builds_the_released_plan_on_the_tiny_model():
    pruner = build_pruner(composed_pruner("pruner=vla_released"), keep=0.25, layout=LAYOUT)
    [stage0] = pruner.plan.stages
    assert stage0.layer == 2 and stage0.rows == "last" and stage0.visual_embeddings
    assert pruner.plan.action_layers == (4,)
    assert pruner.weights.argmin() == len(pruner.weights) - 1  # the newest history entry counts least


@pytest.mark.parametrize("num_layers, layer", [(32, 15), (8, 4), (16, 8), (4, 2), (48, 23)])
def test_released_action_layer_is_layer_15_of_32_at_the_models_depth(num_layers, layer):
    pruner = make(layout=ModelLayout(num_layers=num_layers, image_tokens=(M,)), action_layers="released")
    assert pruner.plan.action_layers == (layer,)


def test_explicit_layer_list_stays_possible():
    layout = ModelLayout(num_layers=32, image_tokens=(256,))
    assert make(layout=layout, action_layers=[15]).plan.action_layers == (15,)
    with pytest.raises(ValueError, match=r"action_layers='middle' is not valid; use one of 'later_half', "
                                         r"'released' or a list"):
        make(action_layers="middle")


def test_selection_dtype_is_checked():
    with pytest.raises(ValueError, match=r"selection_dtype='float16' is not valid; choose one of 'float32', "
                                         r"'bfloat16'"):
        make(selection_dtype="float16")


def test_bfloat16_breaks_a_sub_resolution_tie_towards_the_lower_index():
    scores = torch.zeros(M)
    scores[[5, 9, 20, 30]] = torch.tensor([1.000, 1.001, 1.003, 0.5])  # 5, 9, 20 all 1.0 in bfloat16
    for dtype, expected in (("float32", [9, 20]), ("bfloat16", [5, 9])):
        pruner = make(keep=2 / M, criterion="semantic_only", selection_dtype=dtype, dense_warmup=0)
        assert pruner.select(stage(scores)).kept[0].tolist() == expected


@pytest.mark.parametrize("seed", range(5))
def test_bfloat16_selection_differs_from_float32_only_at_rounding_ties(seed):
    """The bf16 choice is the top-k of the rounded scores; every token it swaps against float32 sits in the
    tie class of the k-th rounded score, so the two agree wherever bf16 still orders the scores."""
    scores = near_ties(seed)
    chosen = {}
    for dtype in ("float32", "bfloat16"):
        pruner = make(criterion="semantic_only", selection_dtype=dtype, dense_warmup=0)
        chosen[dtype] = set(pruner.select(stage(scores)).kept[0].tolist())
    k = len(chosen["float32"])
    rounded = scores.to(torch.bfloat16).float()
    assert chosen["float32"] == set(top_k(scores, k).tolist())
    assert chosen["bfloat16"] == set(top_k(rounded, k).tolist())
    kth = rounded.sort(descending=True).values[k - 1]
    swapped = chosen["float32"] ^ chosen["bfloat16"]
    assert swapped and all(rounded[j] == kth for j in swapped)
    separated = torch.arange(M, dtype=torch.float32).flip(0) * 0.25 + 1  # every step >> bf16 resolution
    for dtype in ("float32", "bfloat16"):
        pruner = make(criterion="semantic_only", selection_dtype=dtype, dense_warmup=0)
        assert pruner.select(stage(separated)).kept[0].tolist() == list(range(k))


def run_dual(selection_dtype: str, semantic: torch.Tensor, action: torch.Tensor, embeddings: torch.Tensor):
    """One dense warm-up query observing `action`, then the pruned selection of `semantic`."""
    pruner = make(window=1, selection_dtype=selection_dtype)
    warmup = pruner.select(stage(torch.rand(M)))
    pruner.observe([action[warmup.kept[0]]])
    return pruner.select(stage(semantic, embeddings)).kept[0]


def test_bfloat16_dual_selection_rounds_both_rankings_and_the_distances():
    semantic, action = near_ties(3), near_ties(4) / 100
    guide = action / action.sum()  # the public code casts its action estimate scaled to sum 1
    k = round(0.25 * M)
    by_semantic = top_k(semantic.to(torch.bfloat16).float(), k)
    by_action = top_k(guide.to(torch.bfloat16).float(), k)
    union = torch.unique(torch.cat([by_semantic, by_action]))
    assert len(union) > k  # the diversity filter has work to do
    differs_from_float32_distances = 0
    for seed in range(10):
        embeddings = torch.randn(M, 8, generator=torch.Generator().manual_seed(seed))
        kept = run_dual("bfloat16", semantic, action, embeddings)
        expected = union[select_diverse(embeddings[union], k, dtype=torch.bfloat16)].sort().values
        assert kept.tolist() == expected.tolist()
        float32_distances = union[select_diverse(embeddings[union], k)].sort().values
        differs_from_float32_distances += kept.tolist() != float32_distances.tolist()
        assert kept.tolist() != run_dual("float32", semantic, action, embeddings).tolist()
    assert differs_from_float32_distances > 0


def test_bfloat16_action_ranking_rounds_the_estimate_scaled_to_sum_one():
    """Rounding x and x / sum(x) to bf16 ties different tokens; the release rounds the latter."""
    for seed in range(50):
        action = near_ties(seed) / 7
        pruner = make(window=1, criterion="action_only", selection_dtype="bfloat16")
        warmup = pruner.select(stage(torch.rand(M)))
        pruner.observe([action[warmup.kept[0]]])
        kept = pruner.select(stage(torch.rand(M))).kept[0].tolist()
        k = len(kept)
        scaled = sorted(top_k((action / action.sum()).to(torch.bfloat16).float(), k).tolist())
        unscaled = sorted(top_k(action.to(torch.bfloat16).float(), k).tolist())
        assert kept == scaled
        if scaled != unscaled:
            return
    pytest.fail("no seed where the scale changes the bf16 ranking: the test shows nothing")
