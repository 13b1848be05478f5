"""SparseVLM's rater rules: the VLA-Pruner repository's baseline (default) and the SparseVLM paper's, on
constructed embeddings (exact rows, ties) and on the fixture checkpoint's real LIBERO queries."""
import pytest
import torch

from baselines.sparsevlm import RATER_RULES, RaterRule, rater_rows
from evaluate import flops
from vla_pruner.engine import PruningEngine
from vla_pruner.layout import SequenceLayout
from vla_pruner.pruning import ModelLayout, StageInputs, build_pruner

from tests.references import openvla_fixture_queries

OFF = -1000.0  # a score whose softmax share is exactly 0 in float32


def six_text_rows():
    """Two visual tokens (e0, e1) and six text rows [first, A, B, C, D, last] whose softmax shares are exact:
    over the candidates A..D, e0 splits between A and B (0.5 each) and e1 goes to C, so relevance =
    (0.25, 0.25, 0.5, 0) and A, B tie with the mean 1/4. The first row takes nearly all of e0 and the last
    row half of e1 once they are candidates too."""
    visual = torch.eye(2, 4)
    text = torch.tensor([[5.0, OFF], [0.0, OFF], [0.0, OFF], [OFF, 0.0], [OFF, OFF], [OFF, 0.0]])
    return visual, torch.cat([text, torch.zeros(6, 2)], 1)


def test_repository_rule_drops_first_and_last_rows_and_keeps_ties():
    visual, text = six_text_rows()
    # softmax over rows 1..4 only: relevance (0.25, 0.25, 0.5, 0) >= 0.25; over all six rows first, rows 1
    # and 2 would fall to 0.003 and only row 3 would rate
    assert rater_rows(visual, text, RATER_RULES["repository"]).tolist() == [1, 2, 3]


def test_strict_comparison_drops_the_rows_tied_with_the_mean():
    visual, text = six_text_rows()
    assert rater_rows(visual, text, RaterRule(skip_first=1, skip_last=1, at_mean=False)).tolist() == [3]


def test_paper_rule_rates_from_every_row_strictly_above_the_mean():
    visual, text = six_text_rows()
    # all six rows: relevance (0.493, 0.003, 0.003, 0.25, 0, 0.25) against the mean 1/6
    assert rater_rows(visual, text, RATER_RULES["paper"]).tolist() == [0, 3, 5]


def test_strict_rule_with_every_candidate_at_the_mean_keeps_them_all():
    visual = torch.eye(2, 4)
    assert rater_rows(visual, torch.ones(1, 4), RATER_RULES["paper"]).tolist() == [0]
    assert rater_rows(visual, torch.ones(3, 4), RATER_RULES["paper"]).tolist() == [0, 1, 2]


def test_repository_rule_needs_a_candidate():
    with pytest.raises(ValueError, match="leaves no candidate among 2 text rows"):
        rater_rows(torch.eye(2, 4), torch.ones(2, 4), RATER_RULES["repository"])


def test_raters_option_default_and_validation():
    layout = ModelLayout(num_layers=8, image_tokens=(16,))
    assert build_pruner({"name": "sparsevlm"}, keep=0.25, layout=layout).config.raters == "repository"
    with pytest.raises(ValueError, match=r"^raters='repo' is not valid; choose one of 'repository', 'paper'$"):
        build_pruner({"name": "sparsevlm", "raters": "repo"}, keep=0.25, layout=layout)


def test_bad_raters_option_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        flops.main(["pruner=sparsevlm", "pruner.raters=repo"])
    assert exit_.value.code == ("error: pruner sparsevlm: raters='repo' is not valid; "
                                "choose one of 'repository', 'paper'")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("mode", ["single", "progressive"])
def test_both_modes_choose_raters_by_the_configured_rule(mode):
    layout = ModelLayout(num_layers=32, image_tokens=(16,))
    visual, text = six_text_rows()
    visual = visual.repeat(8, 1)  # 16 visual tokens, alternately e0 and e1: the same relevance as above
    for rule, raters in (("repository", [1, 2, 3]), ("paper", [0, 3, 5])):
        pruner = build_pruner({"name": "sparsevlm", "mode": mode, "raters": rule}, keep=0.75, layout=layout)
        pruner.select(StageInputs(stage=0, attention=[torch.rand(6, 16)], visual_embeddings=[visual],
                                  text_embeddings=text, hidden_states=[torch.randn(16, 4)]))
        assert pruner.raters.tolist() == raters, (mode, rule)


# ----------------------------------------------------------------------------- the fixture's real queries

@pytest.fixture(scope="module")
def fixture_queries(fixtures_dir):
    return openvla_fixture_queries(fixtures_dir)


def expected_raters(embeds, first: int, stop: int, at_mean: bool) -> list[int]:
    """Sequence rows of the raters among rows first..stop-1, written out from the spec's formula."""
    similarity = embeds[0, 1:257].float() @ embeds[0, first:stop].float().T
    relevance = similarity.softmax(dim=1).mean(dim=0)
    chosen = relevance >= relevance.mean() if at_mean else relevance > relevance.mean()
    return (torch.nonzero(chosen).flatten() + first).tolist()


@torch.inference_mode()
def test_rules_on_real_queries_choose_their_rows_and_keep_different_tokens(fixture_queries):
    model, queries = fixture_queries
    lm = model.language_model
    moved = []
    for embeds in queries:
        S = embeds.shape[1]
        layout = SequenceLayout.openvla(S)
        kept, raters = {}, {}
        for rule in RATER_RULES:
            pruner = build_pruner({"name": "sparsevlm", "raters": rule}, 0.25, ModelLayout(len(lm.layers), (256,)))
            engine = PruningEngine(lm, pruner)
            state = engine.prefill(embeds, layout)
            engine.finish(state)
            kept[rule] = set(state.trace.selections[0].kept[0].tolist())
            raters[rule] = (pruner.raters + layout.text.start).tolist()
        assert layout.text == slice(257, S)
        assert raters["repository"] == expected_raters(embeds, 258, S - 1, at_mean=True)  # rows 258..S-2
        assert raters["paper"] == expected_raters(embeds, 257, S, at_mean=False)  # rows 257..S-1
        assert len(kept["repository"]) == len(kept["paper"]) == 64
        moved.append(len(kept["repository"] - kept["paper"]))
    assert any(moved), "the rater rule changed no kept token on any fixture frame"
