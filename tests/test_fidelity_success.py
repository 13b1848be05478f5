"""Fidelity against closed-loop success (`python -m evaluate.fidelity.success`) on small synthetic inputs: run
directories written through the real ResultStore and a fidelity.csv as `python -m evaluate.fidelity` writes it."""
import numpy as np
import pandas as pd
import pytest

from evaluate.fidelity.success import fidelity_vs_success, main, spearman
from tests.test_report import write_run

# (pruner, keep) -> (closed-loop successes of 8, offline action L1)
SETTINGS = {("none", 1.0): (8, 0.0), ("vla", 0.5): (7, 0.01), ("fastv", 0.5): (6, 0.02), ("vla", 0.25): (5, 0.03),
            ("fastv", 0.25): (3, 0.05)}


def fidelity_csv(path, settings=SETTINGS, model="openvla", suite="libero_spatial"):
    shared = {"model": model, "suite": suite, "episodes": 3}
    rows = [{"pruner": p, "keep": k, "method": "(the fidelity table's)", "queries": 40, "action_l1": l1,
             "gripper_agreement": 1 - l1, **shared} for (p, k), (_, l1) in settings.items()]
    rows.append({"pruner": "random", "keep": 0.5, "method": "Random", "queries": 40, "action_l1": 0.2,
                 "gripper_agreement": 0.5, **shared})  # no closed-loop run: left out
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for (pruner, keep), (successes, _) in SETTINGS.items():
        write_run(root, "libero_spatial", pruner, keep, 7, {0: [i < successes for i in range(8)]}, total_ms=100.0)
    write_run(root, "libero_spatial", "divprune", 0.5, 7, {0: [True] * 8}, total_ms=100.0)  # no fidelity row
    write_run(root, "libero_object", "fastv", 0.5, 7, {0: [True] * 8}, total_ms=100.0)  # another suite
    return root


def test_rank_correlation_and_scatter(runs, tmp_path):
    csv = fidelity_csv(tmp_path / "fidelity.csv")
    rho, table, paths = fidelity_vs_success(csv, [str(runs)], tmp_path / "out")
    assert rho == pytest.approx(-1.0)  # more L1, less success, at every setting
    assert sorted(zip(table.pruner, table.keep)) == sorted(SETTINGS)
    assert table.set_index(["pruner", "keep"]).loc[("fastv", 0.25), "sr"] == pytest.approx(100 * 3 / 8)
    assert set(table.episodes) == {8} and "(the fidelity table's)" not in set(table.method)  # the runs' columns
    assert {p.name for p in paths} >= {"fidelity_vs_success.csv", "fidelity_vs_success.md", "fidelity_vs_success.png"}
    assert "Spearman rho = -1.000 over 5 settings" in (tmp_path / "out" / "fidelity_vs_success.md").read_text()
    rho, _, _ = fidelity_vs_success(csv, [str(runs)], tmp_path / "out", measure="gripper_agreement")
    assert rho == pytest.approx(1.0)


def test_spearman_is_scipys_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = pd.Series(rng.integers(0, 4, 12).astype(float)), pd.Series(rng.normal(size=12))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert np.isnan(spearman(pd.Series([1.0, 2.0]), pd.Series([2.0, 1.0])))  # too few settings to rank


def test_errors_are_one_line(runs, tmp_path):
    csv = fidelity_csv(tmp_path / "fidelity.csv")
    with pytest.raises(SystemExit, match="^error: .*no column 'nope'; valid measures: queries, action_l1"):
        main([str(csv), str(runs), "--out", str(tmp_path / "o"), "--measure", "nope"])
    with pytest.raises(SystemExit, match="^error: no closed-loop run matches"):
        main([str(fidelity_csv(tmp_path / "other.csv", model="openvla_oft")), str(runs), "--out", str(tmp_path)])
    write_run(runs / "again", "libero_spatial", "fastv", 0.5, 7, {0: [True] * 4}, total_ms=100.0, device="cpu")
    with pytest.raises(SystemExit, match="^error: 2 different closed-loop experiments for openvla fastv keep 0.5"):
        main([str(csv), str(runs), "--out", str(tmp_path / "o")])


def test_a_table_that_is_not_a_fidelity_table_and_an_out_that_is_a_file_are_one_line(runs, tmp_path):
    """Items 10 and 14: a non-numeric measure used to be ranked as strings; a table without `model`, and --out a
    file, were tracebacks."""
    csv = fidelity_csv(tmp_path / "fidelity.csv")
    with pytest.raises(SystemExit, match="^error: .*'s column 'method' is not numeric; valid measures: queries, "):
        main([str(csv), str(runs), "--out", str(tmp_path / "o"), "--measure", "method"])
    pd.read_csv(csv).drop(columns="model").to_csv(tmp_path / "no_model.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*no_model.csv is not a fidelity.csv of python -m "
                                         r"evaluate.fidelity \(no column model\)$"):
        main([str(tmp_path / "no_model.csv"), str(runs), "--out", str(tmp_path / "o")])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SystemExit, match="^error: .*empty.csv is not a fidelity.csv"):
        main([str(tmp_path / "empty.csv"), str(runs), "--out", str(tmp_path / "o")])
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(SystemExit, match=f"^error: output directory {tmp_path / 'a_file'} is not writable"):
        main([str(csv), str(runs), "--out", str(tmp_path / "a_file")])
    assert (tmp_path / "a_file").read_text() == "mine"
    assert not (tmp_path / "o").exists()
