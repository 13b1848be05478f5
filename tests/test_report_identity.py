"""Reports never mix experiments: rows by full run identity (pruner options, step limit, checkpoint, device),
seeds pooled explicitly, incomplete runs flagged, keep printed exactly, unreadable files named, 0% / 100% rows
plotted. Run directories are written as the harness writes them: the config composed by Hydra from the real
config files, its run identity, wanted episodes and records through the real ResultStore."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from evaluate.analysis.plots import error_bars
from evaluate.analysis.report import load_runs, method_table, success_stats, suite_table, task_table, write_report
from evaluate.config import run_identity
from evaluate.store import EpisodeRecord, ResultStore
from tests.conftest import REPO, composed
from test_report import collect, vla_query



def harness_run(root: Path, overrides: list[str], outcomes: dict[int, list[bool]], wanted: int | None = None,
                device: str = "cuda", complete: bool | None = None) -> Path:
    """A run directory as `python -m evaluate <overrides>` leaves it. `wanted` = init states wanted per task
    (None: a directory older than `wanted/`); `device` = what the policy reports in summary.json; `complete`
    = summary.json's flag (None: no summary.json)."""
    suite = [] if any(o.startswith("suite=") for o in overrides) else ["suite=libero_spatial"]  # the tables' first column
    cfg = composed("model=openvla", *suite, *overrides, f"output_root={root}")
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True)
    store = ResultStore(run_dir)
    store.write_identity(run_identity(cfg))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if wanted is not None:
        store.want((t, i) for t in outcomes for i in range(wanted))
    kept = 256 if cfg.pruner.name == "none" else round(cfg.keep * 256)
    for task_id, successes in outcomes.items():
        for init, success in enumerate(successes):
            store.append(EpisodeRecord(suite=cfg.suite.name, task_id=task_id, task=f"task {task_id}",
                                       init_index=init, success=success, steps=10, wall_time_s=1.0,
                                       queries=[vla_query(kept, 100.0)]))
    if complete is not None:
        (run_dir / "summary.json").write_text(json.dumps({"policy": {"device": device}, "complete": complete}))
    else:
        (run_dir / "summary.json").write_text(json.dumps({"policy": {"device": device}}))
    return run_dir


def markdown_column(path: Path, column: str) -> list[str]:
    """The cells of one column of the Markdown table in `path`."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [[c.strip() for c in line.strip("|").split("|")][header.index(column)] for line in lines[2:]]


def test_two_ablation_variants_are_two_rows_with_readable_labels(tmp_path):
    """Two pruner=vla runs that differ only in criterion were one row with pooled episodes."""
    root = tmp_path / "runs"
    harness_run(root, ["pruner=none"], {0: [True] * 4}, wanted=4)
    harness_run(root, ["pruner=vla", "keep=0.25"], {0: [True, True, False, False]}, wanted=4)
    harness_run(root, ["pruner=vla", "keep=0.25", "pruner.criterion=semantic_only"], {0: [False] * 4}, wanted=4)
    rs = load_runs([root])
    vla = suite_table(rs).query("pruner == 'vla'").set_index("method")
    assert sorted(vla.index) == ["VLA-Pruner", "VLA-Pruner (criterion=semantic_only)"]
    assert (vla.loc["VLA-Pruner", "episodes"], vla.loc["VLA-Pruner", "successes"]) == (4, 2)
    assert (vla.loc["VLA-Pruner (criterion=semantic_only)", "episodes"],
            vla.loc["VLA-Pruner (criterion=semantic_only)", "successes"]) == (4, 0)
    table = method_table(rs).set_index("method")
    assert list(table.index) == ["Dense", "VLA-Pruner", "VLA-Pruner (criterion=semantic_only)"]
    assert table.loc["VLA-Pruner", "relative_acc_pct"] == pytest.approx(50.0)
    assert table.loc["VLA-Pruner (criterion=semantic_only)", "relative_acc_pct"] == pytest.approx(0.0)
    assert (table.settings == "").all()  # the method label already tells them apart

    out = tmp_path / "results"
    write_report(rs, out)
    assert markdown_column(out / "table1.md", "method") == list(table.index)
    collect(str(root), "--out", str(out))
    ours = pd.read_csv(out / "table1_vs_paper.csv").query("retention_pct == 25 and model == 'openvla'")
    ours = ours.set_index("method")
    assert ours.loc["VLA-Pruner", "spatial"] == 50.0 and ours.loc["VLA-Pruner", "spatial_paper"] > 0
    variant = ours.loc["VLA-Pruner (criterion=semantic_only)"]
    assert variant.spatial == 0.0 and pd.isna(variant.spatial_paper)  # the paper has no such row


def test_step_limit_checkpoint_and_device_are_part_of_the_experiment(tmp_path):
    root = tmp_path / "runs"
    harness_run(root, ["pruner=fastv", "keep=0.5"], {0: [True, True]}, wanted=2)
    harness_run(root, ["pruner=fastv", "keep=0.5", "suite.max_steps=40", "output_dir=" + str(root / "short")],
                {0: [False, False]}, wanted=2)
    harness_run(root, ["pruner=none"], {0: [True, True]}, wanted=2)
    rs = load_runs([root])
    fastv = suite_table(rs).query("pruner == 'fastv'").set_index("max_steps")
    assert sorted(fastv.index) == [40, 220] and (fastv.episodes == 2).all()
    assert fastv.loc[40, "successes"] == 0 and fastv.loc[220, "successes"] == 2
    assert fastv.loc[40, "settings"] == "suite.max_steps=40" and fastv.loc[220, "settings"] == "suite.max_steps=220"
    assert fastv.loc[220, "relative_sr"] == 1.0 and pd.isna(fastv.loc[40, "relative_sr"])  # no dense at 40 steps
    table1 = method_table(rs).query("method == 'FastV'")
    assert len(table1) == 2 and sorted(table1.spatial) == [0.0, 100.0]
    assert sorted(table1.settings) == ["suite.max_steps=220", "suite.max_steps=40"]
    assert (table1.speedup == 1.0).all()  # both against the dense row (latency pooled over its suites)

    # one checkpoint per suite (model.checkpoint=...): one Table 1 row across suites
    other = tmp_path / "per_suite_checkpoints"
    for suite, ok in (("libero_spatial", True), ("libero_object", False)):
        harness_run(other, ["pruner=vla", "keep=0.5", f"suite={suite}", f"model.checkpoint=/ckpt/{suite}"],
                    {0: [ok]}, wanted=1)
    # the same experiment on another device is another row (latency and speedup are per device)
    harness_run(other, ["pruner=vla", "keep=0.5", "model.checkpoint=/ckpt/libero_spatial", "seed=8"], {0: [False]},
                wanted=1, device="cpu")
    table1 = method_table(load_runs([other])).set_index("device")
    assert sorted(table1.index) == ["cpu", "cuda"]
    assert (table1.loc["cuda", "spatial"], table1.loc["cuda", "object"]) == (100.0, 0.0)
    assert table1.loc["cpu", "spatial"] == 0.0 and pd.isna(table1.loc["cpu", "object"])


def test_seeds_of_one_experiment_are_pooled_and_said_so(tmp_path):
    root = tmp_path / "runs"
    harness_run(root, ["pruner=vla", "keep=0.25", "seed=7"], {0: [True, True]}, wanted=2)
    harness_run(root, ["pruner=vla", "keep=0.25", "seed=8"], {0: [False, False]}, wanted=2)
    rs = load_runs([root])
    [row] = suite_table(rs).itertuples()
    assert (row.seeds, row.seed_values, row.episodes, row.successes) == (2, "7, 8", 4, 2)
    assert row.completeness == "4/4" and row.run_status == "complete"
    [row] = method_table(rs).itertuples()
    assert (row.seeds, row.seed_values, row.episodes) == (2, "7, 8", 4)
    write_report(rs, tmp_path / "results")
    assert markdown_column(tmp_path / "results" / "table1.md", "seed_values") == ["7, 8"]


def test_keep_and_retention_print_exactly(tmp_path):
    root = tmp_path / "runs"
    harness_run(root, ["pruner=none"], {0: [True]}, wanted=1)
    for keep in ("0.25", "0.125"):
        harness_run(root, ["pruner=fastv", f"keep={keep}"], {0: [True]}, wanted=1)
    out = tmp_path / "results"
    write_report(load_runs([root]), out)
    assert markdown_column(out / "table1.md", "retention_pct") == ["100", "25", "12.5"]
    assert markdown_column(out / "suites.md", "keep") == ["1", "0.25", "0.125"]
    assert markdown_column(out / "tasks.md", "keep") == ["1", "0.25", "0.125"]
    tex = (out / "suites.tex").read_text()
    assert " 0.25 &" in tex and " 0.125 &" in tex and " 0.2 &" not in tex
    assert pd.read_csv(out / "suites.csv").keep.tolist() == [1.0, 0.25, 0.125]


def test_unreadable_summary_is_named_and_the_records_still_count(tmp_path, caplog):
    root = tmp_path / "runs"
    run_dir = harness_run(root, ["pruner=fastv", "keep=0.5"], {0: [True, False, True]}, wanted=3)
    (run_dir / "summary.json").write_text('{"policy": {"device": "cu')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        rs = load_runs([root])
    assert str(run_dir / "summary.json") in caplog.text
    [row] = suite_table(rs).itertuples()
    assert (row.episodes, row.successes, row.completeness) == (3, 2, "3/3")
    assert row.device == "auto"  # the configured device: the one used was in the unreadable file

    # a run whose identity cannot be read at all is skipped, named; the CLI still writes the report
    broken = harness_run(root, ["pruner=vla", "keep=0.5"], {0: [True]}, wanted=1)
    (broken / "run_identity.json").write_text("{")
    (broken / "config.yaml").write_text("pruner: [")
    result = subprocess.run([sys.executable, "-m", "evaluate.report", str(root), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(str(run_dir / "summary.json") in w for w in warnings)
    assert any(str(broken / "config.yaml") in w and "skipped" in w for w in warnings)
    assert markdown_column(tmp_path / "out" / "table1.md", "method") == ["FastV"]


def test_incomplete_runs_are_rows_of_their_own_and_never_the_dense_reference(tmp_path):
    root = tmp_path / "runs"
    harness_run(root, ["pruner=none", "seed=7"], {0: [True, True, False, False]}, wanted=4)  # dense 50%
    harness_run(root, ["pruner=none", "seed=8"], {0: [True]}, wanted=4)  # interrupted: 1 of 4
    harness_run(root, ["pruner=fastv", "keep=0.5", "seed=7"], {0: [True, False, False, False]}, wanted=4)
    harness_run(root, ["pruner=fastv", "keep=0.5", "seed=8"], {0: [True, True]}, wanted=4)
    rs = load_runs([root])
    table = suite_table(rs).set_index(["pruner", "run_status"])
    assert len(table) == 4
    assert table.loc[("none", "complete"), ["seed_values", "completeness", "sr"]].tolist() == ["7", "4/4", 50.0]
    assert table.loc[("none", "incomplete"), ["seed_values", "completeness", "sr"]].tolist() == ["8", "1/4", 100.0]
    assert table.loc[("fastv", "incomplete"), ["completeness", "sr"]].tolist() == ["2/4", 100.0]
    # relative to the complete dense run, even for the incomplete rows
    assert table.loc[("fastv", "complete"), "relative_sr"] == pytest.approx(0.5)
    assert table.loc[("fastv", "incomplete"), "relative_sr"] == pytest.approx(2.0)
    table1 = method_table(rs)
    assert list(zip(table1.method, table1.run_status, table1.completeness)) == [
        ("Dense", "complete", "4/4"), ("Dense", "incomplete", "1/4"),
        ("FastV", "complete", "4/4"), ("FastV", "incomplete", "2/4")]
    per_task = task_table(rs).set_index(["pruner", "run_status"])
    assert per_task.loc[("fastv", "incomplete"), "completeness"] == "2/4"
    write_report(rs, tmp_path / "results")
    assert markdown_column(tmp_path / "results" / "table1.md", "completeness") == ["4/4", "1/4", "4/4", "2/4"]


def test_runs_older_than_wanted_fall_back_to_the_summary(tmp_path):
    root = tmp_path / "runs"
    harness_run(root, ["pruner=none"], {0: [True, True]}, complete=True)
    harness_run(root, ["pruner=fastv", "keep=0.5"], {0: [True]}, complete=False)
    harness_run(root, ["pruner=vla", "keep=0.5"], {0: [True]})  # no `complete` anywhere
    table = suite_table(load_runs([root])).set_index("pruner")
    assert table.loc["none", ["run_status", "completeness"]].tolist() == ["complete", "2/?"]
    assert table.loc["fastv", ["run_status", "completeness"]].tolist() == ["incomplete", "1/?"]
    assert table.loc["vla", ["run_status", "completeness"]].tolist() == ["unknown", "1/?"]


def test_error_bars_are_never_negative_at_zero_and_full_success():
    for n in range(1, 501):
        for k in (0, n):
            episodes = pd.DataFrame({"success": [True] * k + [False] * (n - k), "status": "ok"})
            lower, upper = error_bars(pd.DataFrame([success_stats(episodes)]))
            assert lower.iloc[0] >= 0 and upper.iloc[0] >= 0, (k, n)


def test_zero_and_full_success_over_500_episodes_plot(tmp_path):
    """Plots crashed ('yerr' must not contain negative values) on any 0% or 100% row."""
    root = tmp_path / "runs"
    harness_run(root, ["pruner=none"], {t: [True] * 50 for t in range(10)}, wanted=50)
    harness_run(root, ["pruner=vla", "keep=0.25"], {t: [False] * 50 for t in range(10)}, wanted=50)
    rs = load_runs([root])
    assert sorted(suite_table(rs).successes) == [0, 500]
    paths = write_report(rs, tmp_path / "results")
    for stem in ("openvla_success_vs_retention", "openvla_cuda_success_vs_flops", "openvla_cuda_success_vs_latency"):
        assert (tmp_path / "results" / f"{stem}.png").stat().st_size > 0
    assert all(p.stat().st_size > 0 for p in paths)


def test_collect_compares_both_readings_of_vla_pruner_with_the_papers_row(tmp_path):
    """`pruner=vla` (the paper's reading) and `pruner=vla_released` (the released code) both sit beside the paper's
    VLA-Pruner numbers, labelled by reading."""
    from tests.test_report import write_run

    write_run(tmp_path, "libero_spatial", "vla", 0.25, 7, {0: [True]}, total_ms=80.0)
    released = write_run(tmp_path, "libero_spatial", "vla_released", 0.25, 7, {0: [False]}, total_ms=80.0)
    import yaml

    cfg = yaml.safe_load((released / "config.yaml").read_text())  # a run of the preset: name vla, its values
    preset = composed("pruner=vla_released", "model=openvla_tiny")
    cfg["pruner"] = OmegaConf.to_container(preset.pruner, resolve=True)
    (released / "config.yaml").write_text(yaml.safe_dump(cfg))
    collect(str(tmp_path), "--out", str(tmp_path / "out"))
    table = pd.read_csv(tmp_path / "out" / "table1_vs_paper.csv")
    rows = table[(table.model == "openvla") & (table.retention_pct == 25)].set_index("method")
    assert rows.loc["VLA-Pruner", "reading"] == "paper"
    assert rows.loc["VLA-Pruner (as released)", "reading"] == "as released"
    assert rows.loc["VLA-Pruner", "spatial_paper"] == rows.loc["VLA-Pruner (as released)", "spatial_paper"] > 0


def test_a_run_without_a_readable_record_is_a_row_of_no_episodes(tmp_path):
    """Every record malformed (or none yet: a run just started): the report warns about the record and writes its
    tables; it used to die with AttributeError: 'DataFrame' object has no attribute 'identity' (issue 38)."""
    root = tmp_path / "runs"
    run_dir = harness_run(root, ["pruner=fastv", "keep=0.5"], {0: [True]}, wanted=2)
    (run_dir / "episodes" / "task00.jsonl").write_text('{"suite": "libero_spatial", "task_id": "zero"}\n')
    empty = harness_run(root, ["pruner=vla", "keep=0.5"], {0: [True]}, wanted=1)
    (empty / "episodes" / "task00.jsonl").write_text("")  # started, nothing recorded yet
    result = subprocess.run([sys.executable, "-m", "evaluate.report", str(root), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert any(line.startswith("warning: ") and "task00.jsonl" in line for line in result.stderr.splitlines())
    table = pd.read_csv(tmp_path / "out" / "table1.csv")
    assert sorted(table.method) == ["FastV", "VLA-Pruner"] and table.episodes.tolist() == [0, 0]
    assert pd.read_csv(tmp_path / "out" / "tasks.csv").empty
