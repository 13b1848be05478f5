"""VLA-Pruner selection: temporal estimate, warm-up, dual-level union + diversity filter, ablations."""
import torch

from vla_pruner.diversity import select_diverse
from vla_pruner.method import interleave_union, temporal_weights
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner, top_k

M = 16
LAYOUT = ModelLayout(num_layers=8, image_tokens=(M,))


def make(keep=0.25, layout=LAYOUT, **options):
    return build_pruner({"name": "vla", **options}, keep=keep, layout=layout)


def inputs(semantic, embeddings=None):
    """Stage-0 inputs for one image, or for several when given lists."""
    semantic = semantic if isinstance(semantic, list) else [semantic]
    if embeddings is None:
        embeddings = [torch.randn(len(s), 8, generator=torch.Generator().manual_seed(1)) for s in semantic]
    embeddings = embeddings if isinstance(embeddings, list) else [embeddings]
    return StageInputs(stage=0, attention=[s[None] for s in semantic], visual_embeddings=embeddings)


def query(pruner, semantic, action, embeddings=None):
    """One policy query as the engine runs it: select, then observe the action attention of kept tokens."""
    selection = pruner.select(inputs(semantic, embeddings))
    actions = action if isinstance(action, list) else [action]
    pruner.observe([a[k] for a, k in zip(actions, selection.kept)])
    return selection


def one_hot_ranking(top):
    """Scores whose top entries are `top`, in that order."""
    scores = torch.zeros(M)
    for rank, j in enumerate(top):
        scores[j] = 10.0 - rank
    return scores


def test_temporal_weights_newest_largest_and_reversed():
    paper = temporal_weights(3, 0.8)  # oldest first
    expected = torch.tensor([0.8 ** 3, 0.8 ** 2, 0.8]) / (0.8 ** 3 + 0.8 ** 2 + 0.8)
    assert torch.allclose(paper, expected)
    assert paper.argmax() == 2 and torch.allclose(temporal_weights(3, 0.8, "reversed"), paper.flip(0))
    assert torch.isclose(paper.sum(), torch.tensor(1.0))


def test_dense_warmup_runs_unpruned_while_history_fills():
    pruner = make(window=3)
    for step in range(3):
        selection = query(pruner, torch.rand(M), torch.rand(M))
        assert selection.warmup and selection.is_dense and len(pruner.history) == step + 1
    selection = query(pruner, torch.rand(M), torch.rand(M))
    assert not selection.warmup and len(selection.kept[0]) == 4


def test_without_dense_warmup_a_short_history_prunes_by_semantic_score():
    pruner = make(window=2, dense_warmup=0)
    semantic = one_hot_ranking([3, 9, 1, 12])
    selection = query(pruner, semantic, torch.rand(M))
    assert not selection.warmup and selection.kept[0].tolist() == [1, 3, 9, 12]
    assert pruner.plan.stages[0].visual_embeddings


def test_fewer_dense_queries_than_the_window_fill_the_rest_of_the_history_by_semantic_score():
    pruner = make(window=3, dense_warmup=1)
    assert pruner.config.dense_warmup == 1 and make(window=5).config.dense_warmup == 5  # default: = window
    first = query(pruner, torch.rand(M), torch.rand(M))
    assert first.warmup and first.is_dense
    semantic = one_hot_ranking([3, 9, 1, 12])
    for _ in range(2):  # history of 1, then 2: semantic score alone, pruned, not warm-up
        selection = query(pruner, semantic, torch.rand(M))
        assert not selection.warmup and selection.kept[0].tolist() == [1, 3, 9, 12]
    assert len(pruner.history) == 3 and not pruner.history_short  # the next query is dual


def test_action_estimate_is_the_decaying_average_of_observed_scores():
    pruner = make(window=3, gamma=0.5)
    history = [torch.rand(M) for _ in range(3)]
    for action in history:
        query(pruner, torch.rand(M), action)  # dense warm-up: every token present
    weights = torch.tensor([0.125, 0.25, 0.5]) / 0.875
    assert torch.allclose(pruner.action_estimate()[0], weights @ torch.stack(history))


def test_pruned_tokens_score_zero_action_attention():
    pruner = make(window=1)
    query(pruner, torch.rand(M), torch.rand(M))  # warm-up
    selection = pruner.select(inputs(torch.rand(M)))
    kept = selection.kept[0]
    pruner.observe([torch.ones(len(kept))])
    observed = pruner.history[-1][0]
    assert observed[kept].eq(1).all() and observed.sum() == len(kept)


def test_history_keeps_only_the_window_and_resets_per_episode():
    pruner = make(window=2)
    for _ in range(5):
        query(pruner, torch.rand(M), torch.rand(M))
    assert len(pruner.history) == 2
    pruner.reset(seed=7, episode=1)
    assert len(pruner.history) == 0
    assert query(pruner, torch.rand(M), torch.rand(M)).warmup


def test_dual_keeps_union_when_criteria_agree():
    pruner = make(window=1)
    top = [2, 5, 7, 11]
    query(pruner, torch.rand(M), one_hot_ranking(top))
    assert pruner.select(inputs(one_hot_ranking(top))).kept[0].tolist() == top


def test_dual_filters_union_by_diversity_of_input_embeddings():
    pruner = make(window=1)
    embeddings = torch.randn(M, 8, generator=torch.Generator().manual_seed(3))
    semantic, action = one_hot_ranking([0, 1, 2, 3]), one_hot_ranking([8, 9, 10, 2])
    query(pruner, torch.rand(M), action)
    kept = pruner.select(inputs(semantic, embeddings)).kept[0]
    union = torch.tensor([0, 1, 2, 3, 8, 9, 10])
    expected = union[select_diverse(embeddings[union], 4)].sort().values
    assert kept.tolist() == expected.tolist() and set(kept.tolist()) <= set(union.tolist())


def test_without_filter_the_rankings_alternate():
    pruner = make(window=1, redundancy_filter=False)
    query(pruner, torch.rand(M), one_hot_ranking([8, 9, 10, 2]))
    assert not pruner.plan.stages[0].visual_embeddings
    kept = pruner.select(inputs(one_hot_ranking([0, 1, 2, 3]))).kept[0]
    assert kept.tolist() == [0, 1, 8, 9]
    assert interleave_union(torch.tensor([4, 5, 6]), torch.tensor([4, 7, 5]), 3).tolist() == [4, 5, 7]


def test_ablation_criteria():
    semantic, action = one_hot_ranking([0, 1, 2, 3]), one_hot_ranking([8, 9, 10, 11])
    for criterion, expected in (("semantic_only", [0, 1, 2, 3]), ("action_only", [8, 9, 10, 11])):
        pruner = make(window=1, criterion=criterion, dense_warmup=0 if criterion == "semantic_only" else 1)
        if criterion == "action_only":
            query(pruner, torch.rand(M), action)
        assert pruner.select(inputs(semantic)).kept[0].tolist() == expected
    fusion = make(window=1, criterion="fusion", alpha=0.5)
    query(fusion, torch.rand(M), action)
    fused = 0.5 * semantic / 10 + 0.5 * action / 10  # both already span [0, 10]
    assert fusion.select(inputs(semantic)).kept[0].tolist() == top_k(fused, 4).sort().values.tolist()


def test_semantic_only_needs_no_action_attention_and_warms_up_only_as_told():
    pruner = make(criterion="semantic_only", dense_warmup=0)
    assert pruner.plan.action_layers == () and not pruner.plan.stages[0].visual_embeddings
    assert not pruner.select(inputs(torch.rand(M))).warmup
    same_start = make(criterion="semantic_only")  # VLA-Pruner's default dense start (= window) for every criterion
    assert [same_start.select(inputs(torch.rand(M))).warmup for _ in range(4)] == [True, True, True, False]


def test_plan_follows_options():
    plan = make(prune_layer=2, semantic_source="last").plan
    assert plan.stages[0].layer == 1 and plan.stages[0].rows == "last"
    assert plan.action_layers == (4, 5, 6, 7)  # later half of 8 layers
    assert make(action_layers=[5, 3]).plan.action_layers == (3, 5)


def test_budgets_are_per_image():
    layout = ModelLayout(num_layers=8, image_tokens=(M, M))
    pruner = make(keep=0.25, layout=layout, window=1)
    query(pruner, [torch.rand(M), torch.rand(M)], [torch.rand(M), torch.rand(M)])
    selection = pruner.select(inputs([torch.rand(M), torch.rand(M)],
                                     [torch.randn(M, 8), torch.randn(M, 8)]))
    assert [len(k) for k in selection.kept] == [4, 4]
    assert all(torch.equal(k, k.sort().values) and len(set(k.tolist())) == 4 for k in selection.kept)
