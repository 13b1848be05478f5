"""Every command the README and docs/ show parses: Hydra overrides against the config groups and the composed
configuration (the first point of a sweep), the fidelity and FLOPs commands' own keys against theirs, and script
and module flags against their `--help`. Nothing runs: a command whose checkpoint is a user's download still
parses."""
import re
import runpy
import shlex
import subprocess
import tempfile
from dataclasses import fields
from functools import lru_cache
from pathlib import Path

import pytest

from evaluate.config import CONFIG_DIR, check_group_overrides, group_choices
from evaluate.fidelity.config import FidelityArgs
from evaluate.preflight import command_points
from evaluate.serve.options import OPTION_KEYS
from tests.conftest import REPO, run_in_one_interpreter

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
GROUPS = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra"}
OWN_KEYS = {  # the keys a module takes besides the run's Hydra overrides
    "evaluate": set(),
    "evaluate.flops": {"prompt_tokens", "episode_queries"},
    "evaluate.fidelity": {f.name for f in fields(FidelityArgs)} - {"hydra"},
    "evaluate.serve": OPTION_KEYS,  # the server's own (configs/serve.yaml)
}
LAUNCHERS = {"local": "hydra/launcher=local", "slurm": "hydra/launcher=slurm"}  # scripts/sweep.py --launcher
SWEEP_MODELS = runpy.run_path(str(REPO / "scripts" / "sweep.py"))["PAPER"]["models"]  # its default --models
# what a reader fills in where a page shows a placeholder
PLACEHOLDERS = {"MODEL": "openvla_tiny", "[...]": "[0]"}


def shown_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of each `python ...` command in a bash block: continuation lines joined, `&&` chains split,
    comments dropped."""
    commands = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    words = shlex.split(part, comments=True)
                    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before the command
                        words = words[1:]
                    if words and re.fullmatch(r"(\.venv/bin/)?python3?", words[0]):
                        words = [PLACEHOLDERS.get(w, w).replace("[...]", "[0]") for w in words]
                        commands.append((f"{page.relative_to(REPO)}: {part.strip()}", words[1:]))
    return commands


COMMANDS = shown_commands()


def help_targets() -> list[tuple[str, ...]]:
    """The modules (`-m module`) and scripts whose flags a shown command is checked against (check_command)."""
    targets = {("-m", argv[1]) if argv[0] == "-m" else (argv[0],) for _, argv in COMMANDS
               if argv[0] != "-m" or (argv[1] != "pytest" and argv[1] not in OWN_KEYS)}
    return sorted(targets)


@lru_cache(maxsize=None)
def help_texts() -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """`python <target> --help` of every target, all in one interpreter (conftest.run_in_one_interpreter: each its
    own __main__, argv, output and exit status) rather than one start-up each."""
    targets = help_targets()
    with tempfile.TemporaryDirectory() as directory:
        results = run_in_one_interpreter([[*t, "--help"] for t in targets], Path(directory))
    return dict(zip(targets, results))


def help_text(*target: str) -> str:
    result = help_texts()[target]
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def check_overrides(overrides: list[str], multirun: bool) -> None:
    """As `python -m evaluate` checks them before composing (group options), then composed as Hydra composes the
    first point of the command (keys, types, hydra.* keys)."""
    from hydra import compose, initialize_config_dir

    check_group_overrides(overrides)
    [first, *_] = command_points(["-m", *overrides] if multirun else overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        compose(config_name="config", overrides=first, return_hydra_config=True)


def check_flags(words: list[str], text: str) -> None:
    for word in words:
        if word.startswith("--"):
            flag = word.split("=")[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{flag} is not an option of this command"


def check_command(argv: list[str]) -> None:
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
        if module == "pytest":
            return
        if module in OWN_KEYS:
            multirun = "-m" in args or "--multirun" in args
            overrides = [a for a in args if a not in ("-m", "--multirun")]
            own = [a for a in overrides if a.partition("=")[0] in OWN_KEYS[module]]
            if module == "evaluate.fidelity":
                for option in re.findall(r"[\w.]+", dict(a.split("=", 1) for a in own).get("pruners", "")):
                    assert option in group_choices("pruner"), f"pruners: unknown pruner {option}"
            check_overrides([a for a in overrides if a not in own], multirun)
        else:
            check_flags(args, help_text("-m", module))
    else:
        script, args = argv[0], argv[1:]
        assert (REPO / script).is_file(), f"{script} does not exist"
        mine, _, overrides = (args[:args.index("--")], None, args[args.index("--") + 1:]) if "--" in args \
            else (args, None, [])
        check_flags(mine, help_text(script))
        if overrides:  # scripts/sweep.py's: each multirun names its launcher and model
            launcher = mine[mine.index("--launcher") + 1] if "--launcher" in mine else None
            model = mine[mine.index("--models") + 1] if "--models" in mine else SWEEP_MODELS[0]
            check_overrides([*([LAUNCHERS[launcher]] if launcher in LAUNCHERS else []), f"model={model}",
                             *overrides], multirun=True)


def test_the_docs_show_commands():
    assert len(COMMANDS) > 40 and any(argv[:2] == ["-m", "evaluate"] for _, argv in COMMANDS)


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_shown_command_parses(where, argv):
    check_command(argv)
