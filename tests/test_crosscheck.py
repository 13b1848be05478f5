"""scripts/crosscheck.py's pairing, on outcomes written here: discordant pairs and their exact McNemar p (shared with
the report's `evaluate.analysis.stats`), episodes with the same outcome and steps, the other step counts named, and
the table the README quotes."""
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import crosscheck  # noqa: E402


def test_pairs_count_discordant_outcomes_and_name_other_step_counts():
    ours = {0: (True, 120), 1: (True, 121), 2: (False, 280), 3: (True, 130), 4: (True, 99)}
    theirs = {0: (True, 120), 1: (True, 122), 2: (True, 150), 3: (False, 280), 5: (True, 100)}
    pairs = crosscheck.paired(ours, theirs)
    assert pairs["pairs"] == 4 and (pairs["both_solved"], pairs["only_harness"], pairs["only_vla_eval"]) == (2, 1, 1)
    assert pairs["neither"] == 0 and pairs["same_outcome_and_steps"] == 1 and pairs["mcnemar_exact_p"] == 1.0
    assert pairs["other_steps"] == {1: (121, 122), 2: (280, 150), 3: (130, 280)}
    text = crosscheck.markdown([crosscheck.Side("ours", ours), crosscheck.Side("theirs", theirs)], pairs, [])
    assert "| ours | 4/5 | 80.0 [37.6, 96.4] | 117.5 | 0 |" in text
    assert "discordant pairs 2, exact McNemar p = 1" in text
    assert "1: 121 vs 122, 2: 280 vs 150, 3: 130 vs 280." in text and "0 episode(s) differ." in text
