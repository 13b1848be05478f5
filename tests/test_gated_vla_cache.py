"""Gated VLA-Cache's gate (`baselines.gated_vla_cache`) against a reference transcription of the released code's rule,
written separately below (plain NumPy, float64, loops; spec §1.1 of the 2026 methods notes): the margin of a query's
logits, which OpenVLA-OFT rows it reads under both offsets, and the one-shot flag, on many seeded random inputs; the
published constants; and that changing one of the reference's constants makes it disagree."""
import numpy as np
import pytest
import torch

from baselines.gated_vla_cache import (MODEL_DEFAULTS, OFT_ACTION_ROWS, OPENVLA_ACTION_ROWS, GatedVLACacheConfig,
                                       MarginGate, action_margin, low_margin, oft_margin_rows)

VOCAB = 32064  # OpenVLA's LM head: 32000 tokens + 64 padding rows, all in the softmax

# ------------------------------------------------------------------------------------------- reference


def reference_margin(logits: np.ndarray) -> float | None:
    """Per row: probabilities exp(l - max) / sum in float64, sorted descending, first minus second; mean over rows
    (None without rows)."""
    gaps = []
    for row in np.asarray(logits, dtype=np.float64):
        p = np.exp(row - row.max())
        p = p / p.sum()
        ranked = np.sort(p)[::-1]
        gaps.append(ranked[0] - ranked[1])
    return float(np.mean(gaps)) if gaps else None


def reference_rows(seq_len: int, reused: int, offset: str, num_patches: int = 513, action_rows: int = 56) -> list[int]:
    """The original row numbers the released code reads, by building the sequence it slices: `end` takes rows
    [-58, -2) of the full sequence; `paper` first drops r visual rows (which ones does not change the answer), then
    takes [NUM_PATCHES + NUM_PROMPT_TOKENS, ... + 56) of what is left, with NUM_PATCHES = 512 visual + proprio and
    NUM_PROMPT_TOKENS = P the prompt ids after BOS (measured from the ids: S = 571 + P)."""
    rows = list(range(seq_len))
    if offset == "end":
        return rows[-(action_rows + 2):-2]
    prompt = seq_len - 571
    shortened = [r for r in rows if not 1 <= r <= reused]  # the reused visual rows are gone
    return shortened[num_patches + prompt:num_patches + prompt + action_rows]


def reference_gated(margins: list[float | None], threshold: float | None) -> list[bool]:
    """Which queries of an episode skip the cache, as get_vla_action does it: each query returns a fresh cache dict;
    the flag `low_margin` is put in it only when a threshold is set and the margin exists; the next query reads the
    flag from the previous dict, a missing flag (or the first query's missing dict) as False."""
    gated, previous = [], None
    for margin in margins:
        gated.append(previous is not None and previous.get("low_margin", False))
        previous = {"margin": margin}
        if threshold is not None and margin is not None:
            previous["low_margin"] = float(margin) < float(threshold)
    return gated


def implementation_gated(margins: list[float | None], threshold: float | None) -> list[bool]:
    gate, gated = MarginGate(threshold), []
    for margin in margins:
        gated.append(gate.run_dense())
        gate.observe(margin)
    return gated


# ----------------------------------------------------------------------------------------------- inputs


def peaked_logits(rng: np.random.Generator, rows: int, vocab: int) -> np.ndarray:
    """Random logits whose mean top-1/top-2 gap falls anywhere in (0, 1): a normal background plus two boosted
    tokens per row, by a per-query level and gap and a per-row jitter."""
    logits = rng.normal(size=(rows, vocab)).astype(np.float32)
    level = np.log(vocab) + rng.uniform(-2, 5)
    first = rng.integers(vocab, size=rows)
    second = (first + rng.integers(1, vocab, size=rows)) % vocab
    for column, gap in ((first, rng.uniform(0, 3) + rng.uniform(0, 0.5, size=rows)), (second, 0)):
        logits[np.arange(rows), column] += (level + gap + rng.normal(scale=0.3, size=rows)).astype(np.float32)
    return logits


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("rows", [OPENVLA_ACTION_ROWS, OFT_ACTION_ROWS])
def test_margin_over_the_full_vocabulary_equals_the_reference(rows):
    rng = np.random.default_rng(rows)
    margins = []
    for _ in range(6):
        logits = peaked_logits(rng, rows, VOCAB)
        margin = action_margin(torch.from_numpy(logits))
        assert margin == pytest.approx(reference_margin(logits), abs=2e-5)  # float32 sums of 32064 terms
        margins.append(margin)
    assert min(margins) < 0.5 < max(margins)  # the inputs straddle the thresholds
    assert action_margin(torch.zeros(0, VOCAB)) is None and reference_margin(np.zeros((0, VOCAB))) is None


def test_margin_rows_equal_the_reference_for_every_reuse_count():
    for prompt in (11, 20, 37):
        seq_len = 571 + prompt
        for reused in range(0, 513):
            for offset in ("end", "paper"):
                assert list(oft_margin_rows(seq_len, reused, offset)) == reference_rows(seq_len, reused, offset), \
                    (prompt, reused, offset)


def test_the_published_rows_and_constants():
    S = 600
    assert oft_margin_rows(S) == range(542, 598) == oft_margin_rows(S, 300)  # end: the 29871 row + 55 placeholders
    assert oft_margin_rows(S, 0, "paper") == range(542, 598)
    assert oft_margin_rows(S, 2, "paper") == range(544, 600)  # shifted by r: ends on </s>
    assert len(oft_margin_rows(S, 10, "paper")) == 48 and len(oft_margin_rows(S, 57, "paper")) == 1
    assert len(oft_margin_rows(S, 58, "paper")) == 0 and len(oft_margin_rows(S, 200, "paper")) == 0
    assert (MODEL_DEFAULTS["openvla"].margin_threshold, MODEL_DEFAULTS["openvla_oft"].margin_threshold) == (0.65, 0.50)
    assert (MODEL_DEFAULTS["openvla"].candidates, MODEL_DEFAULTS["openvla_oft"].candidates) == (120, 150)
    assert (MODEL_DEFAULTS["openvla"].eviction_top_k, MODEL_DEFAULTS["openvla_oft"].eviction_top_k) == (120, 100)
    assert (OPENVLA_ACTION_ROWS, OFT_ACTION_ROWS) == (7, 56)


def test_the_gate_is_one_shot():
    margins = [0.9, 0.3, 0.3, 0.9, None, 0.2, 0.9]
    assert implementation_gated(margins, 0.5) == [False, False, True, True, False, False, True]
    assert implementation_gated(margins, None) == [False] * 7  # off: plain VLA-Cache
    assert implementation_gated(margins, 0.0) == [False] * 7  # a margin is never negative
    assert implementation_gated(margins, 1.01) == [False, True, True, True, True, False, True]  # None never gates
    assert low_margin(0.49, 0.5) and not low_margin(0.5, 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_episodes_gate_as_the_reference(seed):
    """Random OFT episodes, both offsets: each query reuses r rows (none on a gated or first query), its margin is read
    from the rows each side picks of its own logits, and the gate decisions agree query by query."""
    rng, fired = np.random.default_rng(seed), {0.5: 0, 0.65: 0, None: 0}
    for offset in ("end", "paper"):
        for model, threshold in (("openvla_oft", 0.5), ("openvla", 0.65), ("any", None)):
            gate, reference_margins, gated, max_reused = MarginGate(threshold), [], [], 0
            for query in range(10):
                seq_len = 571 + int(rng.integers(11, 30))
                dense = gate.run_dense()
                reused = 0 if dense or query == 0 else int(rng.choice([0, 1, 2, 30, 57, 58, 150]))
                max_reused = max(max_reused, reused)
                logits = peaked_logits(rng, seq_len, 256)  # a small vocabulary: the rows are what is tested here
                rows = oft_margin_rows(seq_len, reused, offset)
                gate.observe(action_margin(torch.from_numpy(logits[rows.start:rows.stop])))
                picked = reference_rows(seq_len, reused, offset)
                reference_margins.append(reference_margin(logits[picked]))
                gated.append(dense)
            assert gated == reference_gated(reference_margins, threshold), (offset, model)
            fired[threshold] += sum(gated)
            assert (None in reference_margins) == (offset == "paper" and 58 <= max_reused)
    assert fired[0.5] and fired[0.65] and not fired[None]


def test_config_adds_the_gate_to_vla_cache():
    config = GatedVLACacheConfig()
    assert (config.margin_threshold, config.offset) == (0.65, "end")
    assert (config.threshold, config.eviction_top_k) == (0.996, 120)  # VLA-Cache's own
    assert GatedVLACacheConfig(margin_threshold=None).margin_threshold is None
    with pytest.raises(ValueError, match="offset"):
        GatedVLACacheConfig(offset="start")
    with pytest.raises(ValueError, match="margin_threshold"):
        GatedVLACacheConfig(margin_threshold=-0.1)
    with pytest.raises(ValueError, match="margin_threshold"):
        GatedVLACacheConfig(margin_threshold="high")


# ------------------------------------------------------------------------------------------ sensitivity


def test_a_changed_threshold_in_the_reference_disagrees():
    """Margins between 0.60 and 0.65 gate at the OpenVLA threshold 0.65, not at 0.60."""
    margins = list(np.random.default_rng(0).uniform(0.60, 0.65, size=8))
    assert implementation_gated(margins, 0.65) == reference_gated(margins, 0.65)
    assert implementation_gated(margins, 0.65) != reference_gated(margins, 0.60)


def test_a_changed_sequence_layout_in_the_reference_disagrees():
    """The paper offset counts NP = 513 (visual + proprio) rows: forgetting the proprio token moves every row."""
    for reused in (0, 5, 40):
        assert list(oft_margin_rows(600, reused, "paper")) == reference_rows(600, reused, "paper")
        assert list(oft_margin_rows(600, reused, "paper")) != reference_rows(600, reused, "paper", num_patches=512)
