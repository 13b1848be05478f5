"""The second red team's classes of bad input and fault (issue 29), by entry point: the CLI (`python -m evaluate`),
the FLOPs command, `evaluate.report`, `scripts/collect.py`, `scripts/sweep.py`, the benchmarks and the library API.
Each gets one `error:` line (or the `warning:` the README promises) and never a traceback, and nothing that means
nothing is accepted and recorded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from evaluate.analysis import flops
from evaluate.config import ConfigError
from evaluate.policies import POLICIES
from evaluate.preflight import check_command
from evaluate.store import RunMismatch, ResultStore
from tests.conftest import (REPO, cli_command, composed, episode_records, noop_run_dir, run_cli,
                            run_in_one_interpreter)
from tests.test_bad_inputs import cache, checkpoint_copy, replace  # noqa: F401  (cache: an autouse fixture)
from tests.test_report import write_run
from vla_pruner.models.checkpoint import CheckpointError


def refusal(*overrides: str) -> str:
    """The one line `python -m evaluate OVERRIDES` is refused with before anything runs (its preflight; the
    autouse `cache` fixture gives every test an empty tiny-model cache)."""
    with pytest.raises(ConfigError) as error:
        check_command(list(overrides), POLICIES)
    assert "\n" not in str(error.value) and str(error.value)
    return str(error.value)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""


def mistyped_config(source: Path, target: Path) -> Path:
    """A copy of a fixture checkpoint whose config.json has a string where the LLM's width belongs."""
    directory = checkpoint_copy(source, target)
    config = json.loads((directory / "config.json").read_text())
    config["text_config"]["hidden_size"] = "wide"
    replace(directory / "config.json", json.dumps(config).encode())
    return directory


# ============================================================================ the CLI: python -m evaluate


@pytest.mark.parametrize("case", ["a directory of other files", "a regular file", "under a regular file"])
def test_a_tiny_checkpoint_path_that_cannot_be_built_into_is_refused(case, tmp_path):
    target = tmp_path / "ckpt"
    if case == "a directory of other files":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    elif case == "a regular file":
        target.write_text("mine")
    else:
        (tmp_path / "file").write_text("mine")
        target = tmp_path / "file" / "ckpt"
    message = refusal(f"model.checkpoint={target}", f"output_root={tmp_path / 'runs'}")
    assert message.startswith(f"cannot build a tiny checkpoint (build_seed 0) at {target}: "), message
    assert not (tmp_path / "runs").exists()


def test_a_tiny_checkpoint_built_from_another_seed_is_refused(fixtures_dir, cache, tmp_path):
    directory = checkpoint_copy(fixtures_dir / "openvla_tiny_hf", cache / "openvla_tiny-seed0")
    config = json.loads((directory / "config.json").read_text())
    replace(directory / "config.json", json.dumps({**config, "build_seed": 3}).encode())
    assert refusal(f"output_root={tmp_path}") == (
        f"checkpoint {directory} was built from build_seed 3, not model.build_seed=0: point model.checkpoint at "
        "another directory, or delete it to have it rebuilt")


def test_a_config_json_with_a_mistyped_field_is_named(fixtures_dir, tmp_path):
    directory = mistyped_config(fixtures_dir / "openvla_tiny_hf", tmp_path / "ckpt")
    message = refusal("model=openvla", f"model.checkpoint={directory}", f"output_root={tmp_path}")
    assert message.startswith(f"cannot use {directory}/config.json: text_config: "), message
    assert "hidden_size" in message and "'wide'" in message


@pytest.mark.parametrize("overrides, expected", [
    (["output_root="], "output_root is empty"),
    (["output_dir="], "output_dir is empty"),
    (["+foo=1"], "unknown config key 'foo'"),
    (["+suite.speed=2"], "unknown config key 'suite.speed'"),
    (["policy=noop", "pruner=vla", "keep=0.5"], "policy=noop runs no model and no pruner, so pruner=vla, keep=0.5"),
    (["policy=scripted", "model=openvla_oft_tiny"], "policy=scripted runs no model and no pruner, so "
                                                    "model=openvla_oft_tiny"),
    (["policy=noop", "model.dtype=float32"], "policy=noop runs no model and no pruner, so model.dtype=float32"),
    (["tasks=[0,1]", "expected_tasks=[1,2]"], "expected_tasks=[1, 2] leaves out task(s) [0] that tasks runs"),
    (["expected_tasks=[0,1]"], "expected_tasks=[0, 1] leaves out task(s) [2, 3, 4, 5, 6, 7, 8, 9] that tasks runs"),
])
def test_settings_that_mean_nothing_are_refused(overrides, expected, tmp_path):
    message = refusal(*overrides, *(["output_root=" + str(tmp_path)] if "output_root=" not in overrides else []))
    assert message.startswith(expected), message


@pytest.mark.parametrize("overrides", [["policy=noop"], ["policy=scripted", "seed=3"],
                                       ["tasks=[0]", "expected_tasks=[0,1]"]])
def test_settings_that_mean_something_still_pass(overrides, tmp_path):
    check_command([*overrides, f"output_root={tmp_path}"], POLICIES)


@pytest.mark.parametrize("overrides, expected", [
    (["keep=half"], "keep=half: Value 'half' of type 'str' could not be converted to Float"),
    (["prune_layer=2"], "Could not override 'prune_layer': Key 'prune_layer' not in 'EvalConfig'"),
    (["hydra.job.foo=1"], "Could not override 'hydra.job.foo': Key 'foo' not in 'JobConf'"),
    (["hydra/launcher=nope"], "In 'hydra/config': Could not find 'hydra/launcher/nope'"),
])
def test_hydra_override_errors_name_the_key_and_why(overrides, expected, tmp_path):
    assert expected in refusal(*overrides, f"output_root={tmp_path}")


def test_hydra_override_error_through_the_cli_is_one_line(tmp_path):
    result = run_cli("policy=noop", "hydra.job.foo=1", f"output_root={tmp_path}")
    assert result.returncode != 0
    assert last_line(result) == ("error: Could not override 'hydra.job.foo': Key 'foo' not in 'JobConf'")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_names_the_program_and_the_configuration_table():
    result = subprocess.run([*cli_command("--help")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("evaluate: "), result.stdout[:200]
    assert "__main__" not in result.stdout
    assert "README.md" in result.stdout and "Configuration" in result.stdout


def test_a_directory_without_its_identity_is_not_taken_over(tmp_path):
    """run_identity.json gone, config.yaml still there: that config says which experiment the episodes are."""
    run_dir = tmp_path / "run"
    write_run(tmp_path / "runs", "libero_spatial", "fastv", 0.5, 7, {0: [True]}, total_ms=10.0)
    source = next((tmp_path / "runs").rglob("config.yaml")).parent
    source.rename(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    store = ResultStore(run_dir)
    store.check_identity(config)  # the same experiment may resume
    with pytest.raises(RunMismatch, match=r"holds a run with different settings \(keep\)"):
        store.check_identity({**config, "keep": 0.25})
    (run_dir / "config.yaml").write_text("keep: [\n")
    with pytest.raises(RunMismatch, match="config.yaml is unreadable"):
        store.check_identity(config)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_sigterm_in_the_first_seconds_gives_the_stop_line(tmp_path):
    process = subprocess.Popen(cli_command("policy=noop", f"output_root={tmp_path}"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # importing, long before any run starts
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode not in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM"), stderr


@pytest.mark.sim
def test_a_second_sigterm_gives_the_stop_line_too(tmp_path):
    run_dir = noop_run_dir(tmp_path, "libero_object")
    process = subprocess.Popen(cli_command("policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=3",
                                           "suite.max_steps=400", f"output_root={tmp_path}"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_dir / "summary.json").exists(), 300, "the run to start")
        process.send_signal(signal.SIGTERM)  # while its env is being made: seconds before the flag is looked at
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode not in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM"), stderr


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(c) for c in children]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.sim
def test_workers_end_at_once_when_the_main_process_is_killed(tmp_path):
    process = subprocess.Popen(cli_command("policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=4",
                                           "num_envs=2", "suite.max_steps=400", f"output_root={tmp_path}"),
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers: list[int] = []

        def two_workers_stepping() -> bool:
            workers[:] = [c for c in _children(process.pid)
                          if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
            return len(workers) == 2

        wait_for(two_workers_stepping, 300, "two simulator workers")
        time.sleep(1)  # importing torch and the simulator, then making their envs: many seconds before they talk
        process.kill()
        process.wait()
        killed = time.monotonic()
        wait_for(lambda: not any(_alive(w) for w in workers), 10, "the workers to end")
        assert time.monotonic() - killed < 5
    finally:
        process.kill()


def _fill(directory: Path) -> None:
    """Fill the filesystem of `directory` to the last byte."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (1 << 16, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


@pytest.mark.sim
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs (a disk that fills up) needs root")
def test_a_disk_that_fills_up_mid_run_stops_with_one_line_and_loses_nothing(tmp_path):
    disk, recovered = tmp_path / "disk", tmp_path / "tmp"
    disk.mkdir()
    recovered.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run_dir = noop_run_dir(disk, "libero_object")
        command = cli_command("policy=noop", "suite=libero_object", "tasks=[0]", "episodes_per_task=3",
                              "suite.max_steps=30", f"output_root={disk}")
        env = {**os.environ, "TMPDIR": str(recovered), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        wait_for(lambda: (run_dir / "episodes" / "task00.jsonl").exists(), 300, "the first episode")
        _fill(disk)
        _, stderr = process.communicate(timeout=600)
        assert process.returncode != 0
        assert "Traceback" not in stderr, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: could not write "), stderr
        assert str(recovered / "vla_pruner_recovered") in last or "summary" in last, last
        (disk / "filler").unlink()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert sorted(r["init_index"] for r in episode_records(run_dir)) == [0, 1, 2]
    finally:
        subprocess.run(["umount", "-l", str(disk)])


# ======================================================================================= the FLOPs command


def test_flops_names_a_mistyped_config_json(fixtures_dir, tmp_path, capsys):
    directory = mistyped_config(fixtures_dir / "openvla_tiny_hf", tmp_path / "ckpt")
    with pytest.raises(SystemExit) as exit_:
        flops.main(["model=openvla", f"model.checkpoint={directory}", "pruner=fastv", "keep=0.5"])
    assert str(exit_.value.code).startswith(f"error: cannot use {directory}/config.json: text_config: ")
    assert capsys.readouterr().out == ""


# ================================================================================= evaluate.report, collect


def python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


COMMANDS = {"report": ["-m", "evaluate.report"], "collect": [str(REPO / "scripts" / "collect.py")]}
OUT_CASES = ["a file", "under a file"]
PAPERS = [b"\x89PNG\r\n\x1a\n\0\0binary", b"a,b\n1,2\n", b"", b'"unclosed\n1,2']


def _one_run(root: Path) -> Path:
    write_run(root / "runs", "libero_spatial", "none", 1.0, 7, {0: [True, False]}, total_ms=100.0)
    return root / "runs"


def _unwritable_out(root: Path, command: str, case: str) -> list[str]:
    (root / "file").write_text("mine")
    out = root / "file" if case == "a file" else root / "file" / "results"
    return [*COMMANDS[command], str(_one_run(root)), "--out", str(out)]


def _not_the_paper(root: Path, content: bytes) -> list[str]:
    paper = root / "paper.csv"
    paper.write_bytes(content)
    return [*COMMANDS["collect"], str(_one_run(root)), "--paper", str(paper), "--out", str(root / "out")]


def _mistyped_records(root: Path, command: str) -> list[str]:
    [path] = _one_run(root).rglob("task00.jsonl")
    good = json.loads(path.read_text().splitlines()[0])
    with path.open("a") as f:
        f.write(json.dumps({**good, "init_index": "two", "task_id": 0}) + "\n")
        f.write(json.dumps({**good, "init_index": 5, "success": "yes"}) + "\n")
        f.write(json.dumps({**good, "init_index": 6, "queries": "many"}) + "\n")
    return [*COMMANDS[command], str(root / "runs"), "--out", str(root / "out")]


@pytest.fixture(scope="module")
def report_and_collect(tmp_path_factory) -> dict[tuple, tuple[Path, subprocess.CompletedProcess]]:
    """Each case of the three tests below, in a directory of its own, run as `python <command>`: all in one
    interpreter (conftest.run_in_one_interpreter), not one each. Each is still the command's own __main__ with its
    own argv, output and exit status, so a refusal or warning that is missing or different still fails its case."""
    base = tmp_path_factory.mktemp("report_and_collect")
    cases = {("out", command, case): partial(_unwritable_out, command=command, case=case)
             for command in COMMANDS for case in OUT_CASES}
    cases |= {("paper", content): partial(_not_the_paper, content=content) for content in PAPERS}
    cases |= {("records", command): partial(_mistyped_records, command=command) for command in COMMANDS}
    roots = {key: base / f"case{i}" for i, key in enumerate(cases)}
    commands = []
    for key, prepare in cases.items():
        roots[key].mkdir()
        commands.append(prepare(roots[key]))
    return {key: (roots[key], result) for key, result in zip(cases, run_in_one_interpreter(commands, base))}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", OUT_CASES)
def test_an_out_that_cannot_be_a_directory_is_one_line(command, case, report_and_collect):
    root, result = report_and_collect["out", command, case]
    out = root / "file" if case == "a file" else root / "file" / "results"
    assert result.returncode not in (0, None), result.stdout
    assert last_line(result).startswith(f"error: output directory {out} is not writable"), result.stderr
    assert (root / "file").read_text() == "mine"


@pytest.mark.parametrize("content", PAPERS)
def test_collect_refuses_a_paper_file_that_is_not_the_papers_table(content, report_and_collect):
    root, result = report_and_collect["paper", content]
    assert result.returncode not in (0, None), result.stdout
    assert last_line(result).startswith(f"error: --paper {root / 'paper.csv'} is not the paper's table"), result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_records_with_wrong_field_types_are_a_warning(command, report_and_collect):
    root, result = report_and_collect["records", command]
    [path] = (root / "runs").rglob("task00.jsonl")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all(str(path) in w for w in warnings), result.stderr
    assert "Traceback" not in result.stderr


# ========================================================================================= scripts/sweep.py


SWEEP = str(REPO / "scripts" / "sweep.py")
BAD_SWEEPS = [
    (["--keeps", "0.5", "2.0"], "error: keep=2.0 is outside (0, 1]"),
    (["--models", "openvla_tin"], "error: unknown model 'openvla_tin'"),
    (["--pruners", "fastv", "nope"], "error: unknown pruner 'nope'"),
    (["--seeds", "x"], "error: Error merging override seed=x: Value 'x' of type 'str' could not be converted"),
    (["--models", "pi0_tiny", "--pruners", "vla_cache"], "error: pruner 'vla_cache': "),
]


def sweep_arguments(args: list[str], mode: list[str], root: Path) -> list[str]:
    return ["--models", "openvla_tiny", "--suites", "libero_object", "--pruners", "fastv", "--keeps", "0.5", *args,
            *mode, "--", f"output_root={root}", "episodes_per_task=1", "tasks=[0]", "suite.max_steps=1"]


@pytest.mark.parametrize("args, expected", BAD_SWEEPS)
def test_sweep_checks_every_point_of_every_multirun_before_anything(args, expected, tmp_path, capsys):
    """scripts/sweep.py's `main(argv)`, run in this process as the command runs it (`python scripts/sweep.py ARGS`
    is `main()` on ARGS and nothing else): ten new interpreters, each importing torch, Hydra and the harness only
    to refuse, cost this test two minutes of CI. The command as a process, in both modes, is
    test_sweep_refuses_a_bad_point_as_a_command's."""
    import runpy

    main = runpy.run_path(SWEEP)["main"]
    for mode in (["--dry-run"], []):
        with pytest.raises(SystemExit) as exit_:
            main(sweep_arguments(args, mode, tmp_path))
        code, err = exit_.value.code, capsys.readouterr().err
        assert code not in (None, 0), err
        # what the process prints last: sys.exit's message, or argparse's line before its exit status 2
        line = code if isinstance(code, str) else err.strip().splitlines()[-1]
        assert "\n" not in line and line.startswith(expected), (line, err)
        assert not tmp_path.joinpath("openvla_tiny").exists() and not tmp_path.joinpath("pi0_tiny").exists()


def test_sweep_refuses_a_bad_point_as_a_command(tmp_path):
    """The command itself, both modes: a point only the composed configuration refuses (pi0 runs no VLA-Cache)
    ends the process with one error line and nothing run."""
    args, expected = BAD_SWEEPS[-1]
    for mode in (["--dry-run"], []):
        result = python(SWEEP, *sweep_arguments(args, mode, tmp_path))
        assert result.returncode != 0, result.stdout
        assert last_line(result).startswith(expected), result.stderr
        assert not tmp_path.joinpath("openvla_tiny").exists() and not tmp_path.joinpath("pi0_tiny").exists()


# =========================================================================================== the benchmarks


BENCHMARKS = [
    (["bench_pruning.py", "--rounds", "0", "--width", "64", "--heads", "2", "--mlp", "64", "--layers", "4"],
     "error: argument --rounds: 0 is not an integer >= 1"),
    (["bench_pruning.py", "--width", "0"], "error: argument --width: 0 is not an integer >= 1"),
    (["bench_pruning.py", "--width", "100", "--heads", "3"], "error: --width 100 is not a multiple of --heads 3"),
    (["bench_pruning.py", "--layers", "3", "--prune-layer", "3"], "error: --prune-layer 3 must be in 1..2"),
    (["bench_selection.py", "--repeats", "0", "--width", "8"], "error: argument --repeats: 0 is not an integer >= 1"),
    (["bench_selection.py", "--width", "0", "--repeats", "1"], "error: argument --width: 0 is not an integer >= 1"),
    (["bench_openvla_latency.py", "--queries", "0", "--llm-width", "64", "--vit-width", "64"],
     "error: argument --queries: 0 is not an integer >= 1"),
    (["bench_openvla_latency.py", "--llm-width", "0"], "error: argument --llm-width: 0 is not an integer >= 64"),
    (["bench_throughput.py", "--episodes", "0"], "error: argument --episodes: 0 is not an integer >= 1"),
    (["bench_throughput.py", "--num-envs", "2", "1"], "error: argument --num-envs: 1 is not an integer >= 2"),
    (["bench_throughput.py", "--threads", "0"], "error: unrecognized arguments: --threads 0"),
]


@pytest.fixture(scope="module")
def benchmark_refusals(tmp_path_factory) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """Every case above as `python scripts/<name> <args>`, in one interpreter (conftest.run_in_one_interpreter)."""
    commands = [[str(REPO / "scripts" / argv[0]), *argv[1:]] for argv, _ in BENCHMARKS]
    results = run_in_one_interpreter(commands, tmp_path_factory.mktemp("benchmarks"), timeout_each=60)
    return {tuple(argv): result for (argv, _), result in zip(BENCHMARKS, results)}


@pytest.mark.parametrize("argv, expected", BENCHMARKS, ids=[" ".join(a) for a, _ in BENCHMARKS])
def test_benchmarks_refuse_meaningless_arguments_up_front(argv, expected, benchmark_refusals):
    """Each case is still its script run as __main__ with its own argv, output and exit status, only not in an
    interpreter of its own: a refusal that is missing, late (after the benchmark started: the case's 60 s alarm),
    another message or output on stdout still fails this case."""
    result = benchmark_refusals[tuple(argv)]
    if result.returncode is None:
        pytest.fail(f"{argv[0]} ran on with {argv[1:]} instead of refusing")
    assert result.returncode != 0 and result.stdout == "", result.stdout
    assert result.stderr.strip() == expected or result.stderr.strip().startswith(expected), result.stderr


# ========================================================================================= the library API


@pytest.mark.parametrize("rows, expected", [
    (torch.tensor([0, 9]), "select_diverse: rows must be indices in 0..5 of features' 6 rows, got 9"),
    (torch.tensor([-1, 2]), "select_diverse: rows must be indices in 0..5 of features' 6 rows, got -1"),
    (torch.tensor([0.0, 2.0]), "select_diverse: rows must be an integer tensor, got torch.float32"),
    (torch.tensor([1, 2, 1]), "select_diverse: rows must not repeat, got 1 more than once"),
    (torch.tensor([[0, 1]]), "select_diverse: rows must be 1-D, got shape (1, 2)"),
    ([0, 1], "select_diverse: rows must be a torch.Tensor of indices, got list"),
])
def test_select_diverse_refuses_bad_rows(rows, expected):
    from vla_pruner import select_diverse

    with pytest.raises((ValueError, TypeError)) as error:
        select_diverse(torch.randn(6, 4), 2, rows=rows)
    assert str(error.value) == expected


def test_from_pretrained_names_a_mistyped_config_json(fixtures_dir, tmp_path):
    from vla_pruner import OpenVLA

    directory = mistyped_config(fixtures_dir / "openvla_tiny_hf", tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=f"^cannot use {directory}/config.json: text_config: .*hidden_size"):
        OpenVLA.from_pretrained(directory, device="cpu")


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 a zip header and nothing"])
def test_from_pretrained_names_an_unreadable_oft_action_head(content, fixtures_dir, tmp_path):
    from vla_pruner import OpenVLAOFT

    directory = checkpoint_copy(fixtures_dir / "openvla_oft_tiny_hf", tmp_path / "ckpt")
    replace(directory / "action_head--150000_checkpoint.pt", content)
    with pytest.raises(CheckpointError) as error:
        OpenVLAOFT.from_pretrained(directory, device="cpu")
    message = str(error.value)
    assert message.startswith(f"cannot read {directory}/action_head--150000_checkpoint.pt: ") and "\n" not in message
    assert "weights_only" not in message


def test_tiny_checkpoint_built_from_another_seed_is_refused_by_the_library(fixtures_dir, tmp_path):
    from tests.tiny_models import tiny_openvla as ensure_tiny_checkpoint

    directory = checkpoint_copy(fixtures_dir / "openvla_tiny_hf", tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    replace(directory / "config.json", json.dumps({**config, "build_seed": 3}).encode())
    with pytest.raises(CheckpointError, match="was built from build_seed 3, not model.build_seed=0"):
        ensure_tiny_checkpoint(directory, 0, [])
    (tmp_path / "file").write_text("mine")
    with pytest.raises(CheckpointError, match=f"cannot build .* at {tmp_path / 'file'}: it is a file"):
        ensure_tiny_checkpoint(tmp_path / "file", 0, [])
