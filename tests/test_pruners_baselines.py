"""FastV, SparseVLM (single and progressive) and random selection on hand-built inputs."""
import pytest
import torch

from baselines.random_keep import query_seed
from baselines.sparsevlm import (
    RATER_RULES, dpc_knn, kept_for_total, progressive_layers, rater_rows, recycle_sizes, stage_counts,
)
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner

M = 16
LAYOUT = ModelLayout(num_layers=8, image_tokens=(M,))


# ------------------------------------------------------------------------------------------------- FastV

def test_fastv_keeps_most_attended_tokens_of_the_last_row():
    pruner = build_pruner({"name": "fastv"}, keep=0.25, layout=LAYOUT)
    assert pruner.plan.stages[0].rows == "last" and pruner.plan.stages[0].layer == 2
    last_row = torch.zeros(1, M)
    last_row[0, [13, 2, 7, 9]] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert pruner.select(StageInputs(stage=0, attention=[last_row])).kept[0].tolist() == [2, 7, 9, 13]


def test_fastv_prefill_source_averages_the_rows():
    pruner = build_pruner({"name": "fastv", "source": "prefill"}, keep=0.125, layout=LAYOUT)
    assert pruner.plan.stages[0].rows == "prefill"
    rows = torch.zeros(3, M)
    rows[0, 4] = 1.0  # one row strongly for token 4
    rows[1:, 6] = 0.4  # two rows moderately for token 6: mean 0.27 < 0.33
    assert pruner.select(StageInputs(stage=0, attention=[rows])).kept[0].tolist() == [4, 6]


# --------------------------------------------------------------------------------------- SparseVLM single

def rater_setup():
    """Visual embeddings along e0; text rows 0 and 2 along e0, rows 1 and 3 orthogonal: row 2 is the one
    rater of the repository rule (rows 1..2 are its candidates), rows 0 and 2 those of the paper's."""
    visual = torch.zeros(M, 4)
    visual[:, 0] = 1.0
    text = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 3.0, 0]])
    return visual, text


def test_raters_are_text_rows_with_at_least_mean_relevance():
    visual, text = rater_setup()
    assert rater_rows(visual, text, RATER_RULES["paper"]).tolist() == [0, 2]
    assert rater_rows(visual, text, RATER_RULES["repository"]).tolist() == [2]


def test_sparsevlm_single_scores_by_rater_rows_only():
    pruner = build_pruner({"name": "sparsevlm"}, keep=0.125, layout=LAYOUT)
    stage = pruner.plan.stages[0]
    assert stage.rows == "text" and stage.visual_embeddings and stage.text_embeddings
    visual, text = rater_setup()
    attention = torch.zeros(4, M)
    attention[2, 3] = 0.5  # the rater looks at 3 and 11
    attention[2, 11] = 0.3
    attention[[0, 1, 3], 5] = 0.9  # non-raters look at 5 and 6
    attention[[0, 1, 3], 6] = 0.8
    selection = pruner.select(StageInputs(stage=0, attention=[attention], visual_embeddings=[visual],
                                          text_embeddings=text))
    assert selection.kept[0].tolist() == [3, 11]


# ---------------------------------------------------------------------------------- SparseVLM progressive

def test_progressive_layers_scale_llava_schedule():
    assert progressive_layers(32) == (2, 6, 15)
    assert progressive_layers(16) == (1, 3, 8)
    assert progressive_layers(4) == (0, 1, 2)


@pytest.mark.parametrize("num_layers, keep", [(32, 0.5), (32, 0.25), (32, 0.125), (16, 0.5), (12, 0.25)])
def test_progressive_schedule_averages_to_budget(num_layers, keep):
    layers = progressive_layers(num_layers)
    kept = round(keep * 256)
    counts = stage_counts(256, kept, layers, num_layers)
    per_layer = [256] * (layers[0] + 1)
    for count, start, end in zip(counts, layers, layers[1:] + (num_layers - 1,)):
        per_layer += [count] * (end - start)
    assert len(per_layer) == num_layers
    assert abs(sum(per_layer) / num_layers - kept) <= 0.5
    assert 256 >= counts[0] >= counts[1] >= counts[2] >= 1


def test_progressive_schedule_rejects_unreachable_budget():
    with pytest.raises(ValueError, match="below what progressive SparseVLM can reach"):
        stage_counts(256, 16, (2, 6, 15), 32)  # layers 0..2 alone average 24 tokens
    with pytest.raises(ValueError, match="layers 0..1 already average 42.7"):
        build_pruner({"name": "sparsevlm", "mode": "progressive"}, keep=0.125,
                     layout=ModelLayout(num_layers=12, image_tokens=(256,)))


def test_recycle_sizes_and_kept_count():
    assert recycle_sizes(0) == (0, 0)
    assert recycle_sizes(7) == (3, 1)  # floor(2.1)+1 recycled, one cluster
    assert recycle_sizes(100) == (31, 4)
    rows, total = 256, 114
    kept = kept_for_total(rows, total)
    assert kept + recycle_sizes(rows - kept)[1] == total


def test_dpc_knn_separates_two_blobs():
    blobs = torch.cat([torch.zeros(5, 3), torch.full((5, 3), 10.0)]) + 0.1 * torch.rand(10, 3)
    assign = dpc_knn(blobs, 2)
    assert len(set(assign[:5].tolist())) == 1 and len(set(assign[5:].tolist())) == 1
    assert assign[0] != assign[5]


def test_recycling_merges_best_deleted_tokens_at_their_best_members_position():
    """10 rows, 4 tokens in total: keep 3, delete 7, recycle the best 3 deleted into 1 merged token."""
    from baselines.sparsevlm import SparseVLM

    score = torch.tensor([9.0, 8.0, 7.0, 1.0, 6.0, 2.0, 5.0, 0.5, 4.0, 0.2])
    hidden = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 4)
    origin = torch.tensor([0, 2, 4, 6, 8, 10, 12, 14, 16, 18])
    kept, merged = SparseVLM.recycle(score, hidden, origin, total=4)
    assert kept.tolist() == [0, 1, 2]
    # deleted, by score: rows 4 (6.0), 6 (5.0), 8 (4.0), ...; the best three merge into one token
    assert merged.origin.tolist() == [8]  # position source = row 4, the best recycled member
    assert torch.allclose(merged.features, torch.full((1, 4), (4 + 6 + 8) / 3))


def run_progressive(pruner, layout, d=8, t=5):
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(t, d, generator=generator)
    rows = list(layout.image_tokens)
    selections = []
    for stage_index, stage in enumerate(pruner.plan.stages):
        inputs = StageInputs(
            stage=stage_index,
            attention=[torch.rand(t, n, generator=generator) for n in rows],
            visual_embeddings=[torch.randn(n, d, generator=generator) for n in rows] if stage.visual_embeddings else None,
            text_embeddings=text if stage.text_embeddings else None,
            hidden_states=[torch.randn(n, d, generator=generator) for n in rows])
        selection = pruner.select(inputs)
        selections.append(selection)
        rows = [len(k) + len(m.origin) for k, m in zip(selection.kept, selection.merged)]
    return selections


def test_progressive_stages_hit_their_counts_and_positions_stay_original():
    layout = ModelLayout(num_layers=32, image_tokens=(256, 256))
    pruner = build_pruner({"name": "sparsevlm", "mode": "progressive"}, keep=0.25, layout=layout)
    assert [s.layer for s in pruner.plan.stages] == [2, 6, 15]
    assert all(s.hidden_states and s.rows == "text" for s in pruner.plan.stages)
    selections = run_progressive(pruner, layout)
    for image in range(2):
        counts = pruner.counts[image]
        assert [len(s.kept[image]) + len(s.merged[image].origin) for s in selections] == counts
        assert all(0 <= o < 256 for o in pruner.origin[image].tolist())
        assert len(pruner.origin[image]) == counts[-1]
    assert selections[0].merged[0].features.shape[1] == 8
    record = selections[1].to_record()
    assert record["stage"] == 1 and len(record["merged"]) == 2
    assert pruner.describe()["stage_counts"] == pruner.counts


# ------------------------------------------------------------------------------------------------ random

def random_kept(seed, episode, steps, layout=LAYOUT):
    pruner = build_pruner({"name": "random"}, keep=0.25, layout=layout)
    pruner.reset(seed=seed, episode=episode)
    return [pruner.select(StageInputs(stage=0)).kept for _ in range(steps)]


def test_random_is_reproducible_from_seed_episode_and_step():
    first, again = random_kept(7, 3, 4), random_kept(7, 3, 4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], first[1][0])  # steps differ
    assert not torch.equal(first[0][0], random_kept(7, 4, 1)[0][0])  # episodes differ
    assert not torch.equal(first[0][0], random_kept(8, 3, 1)[0][0])  # run seeds differ
    assert query_seed(7, 3, 0) != query_seed(7, 30, 0)


def test_random_keeps_budget_per_image_and_needs_no_scores():
    layout = ModelLayout(num_layers=8, image_tokens=(M, M))
    pruner = build_pruner({"name": "random"}, keep=0.25, layout=layout)
    assert pruner.plan.stages[0].rows is None and pruner.plan.stages[0].layer == 2
    kept = random_kept(0, 0, 1, layout)[0]
    assert [len(k) for k in kept] == [4, 4] and all(len(set(k.tolist())) == 4 for k in kept)


def test_random_accepts_string_episode_ids():
    pruner = build_pruner({"name": "random"}, keep=0.25, layout=LAYOUT)
    pruner.reset(seed=7, episode="libero_spatial/3/17")
    first = pruner.select(StageInputs(stage=0)).kept[0]
    pruner.reset(seed=7, episode="libero_spatial/3/17")
    assert torch.equal(first, pruner.select(StageInputs(stage=0)).kept[0])
