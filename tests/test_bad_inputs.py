"""Every bad input a run can be given fails before weights load or a simulator starts, in one line that names
it (issue 10): pruner options, keep, device, tasks, model fields, checkpoint files and family, the suite's
statistics; and the FLOPs CLI refuses what a run refuses. Nothing here builds a tiny model or an environment.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluate.analysis import flops
from evaluate.config import ConfigError, validate
from evaluate.policies import POLICIES
from tests.conftest import REPO, composed, run_cli, run_in_one_interpreter

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty tiny-model cache: the checks must judge the tiny models without building them."""
    path = tmp_path / "cache"
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(path))
    return path


def refusal(*overrides: str) -> str:
    """validate()'s one-line message for a config that must be refused."""
    with pytest.raises(ConfigError) as error:
        validate(composed(*overrides), POLICIES)
    message = str(error.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------- config values

TINY_LAYERS = "for a model with 8 layers"  # the default model, openvla_tiny, has 8 LLM layers

REFUSED = [
    # pruner options: types, ranges against the model's depth, choices, unknown names, budgets
    (["pruner=vla", "pruner.prune_layer=2.5"], "pruner vla: prune_layer=2.5 must be an integer"),
    (["pruner=vla", "pruner.prune_layer=0"], f"pruner vla: prune_layer=0 must be in 1..7 {TINY_LAYERS}"),
    (["pruner=fastv", "pruner.prune_layer=8"], f"pruner fastv: prune_layer=8 must be in 1..7 {TINY_LAYERS}"),
    (["pruner=random", "pruner.prune_layer=-1"], f"pruner random: prune_layer=-1 must be in 1..7 {TINY_LAYERS}"),
    (["pruner=sparsevlm", "pruner.prune_layer=12"], f"pruner sparsevlm: prune_layer=12 must be in 1..7 {TINY_LAYERS}"),
    (["pruner=divprune", "pruner.prune_layer=8"], f"pruner divprune: prune_layer=8 must be in 0..7 {TINY_LAYERS}"),
    (["pruner=random", "pruner.prune_layer=three"], "pruner random: prune_layer='three' must be an integer"),
    (["pruner=vla_cache", "pruner.behaviour=foo"], "pruner vla_cache: behaviour='foo' is not valid; choose one of "
                                                   "'paper', 'released'"),
    (["pruner=vla_cache", "pruner.reuse_layers=[9,11]"], "pruner vla_cache: reuse_layers=[9, 11]: none below the "
                                                         "model's 8 layers"),
    (["pruner=vla", "pruner.criterion=both"], "pruner vla: criterion='both' is not valid; choose one of 'dual', "
                                              "'semantic_only', 'action_only', 'fusion'"),
    (["pruner=vla", "pruner.semantic_source=first"], "pruner vla: semantic_source='first' is not valid; choose one of "
                                                     "'prefill', 'last'"),
    (["pruner=vla", "+pruner.warmup=semantic"], "pruner vla: pruner 'vla' has no option(s) warmup (folded into "
                                                "dense_warmup: warmup=dense is dense_warmup=<window> (the default), "
                                                "warmup=semantic is dense_warmup=0)"),
    (["pruner=fastv", "pruner.dense_warmup=-1"], "pruner fastv: dense_warmup=-1 must be 0 or more"),
    (["pruner=vla_cache", "+pruner.dense_warmup=3"], "pruner vla_cache: pruner 'vla_cache' has no option(s) "
                                                     "dense_warmup"),
    (["pruner=vla", "pruner.temporal_order=newest"], "pruner vla: temporal_order='newest' is not valid"),
    (["pruner=vla", "pruner.redundancy_filter=maybe"], "pruner vla: redundancy_filter='maybe' must be true or false"),
    (["pruner=vla", "pruner.window=0"], "pruner vla: window=0 must be a positive integer"),
    (["pruner=vla", "pruner.window=2.5"], "pruner vla: window=2.5 must be an integer"),
    (["pruner=vla", "pruner.gamma=0"], "pruner vla: gamma=0 must be in (0, 1]"),
    (["pruner=vla", "pruner.gamma=1.5"], "pruner vla: gamma=1.5 must be in (0, 1]"),
    (["pruner=vla", "pruner.gamma=high"], "pruner vla: gamma='high' must be a number"),
    (["pruner=vla", "pruner.alpha=-0.1"], "pruner vla: alpha=-0.1 must be in [0, 1]"),
    (["pruner=vla", "pruner.action_layers=[8]"], "pruner vla: action_layers=[8] outside 0..7"),
    (["pruner=vla", "pruner.action_layers=last"], "pruner vla: action_layers='last' is not valid"),
    (["pruner=fastv", "pruner.source=first"], "pruner fastv: source='first' is not valid; choose one of 'last', "
                                              "'prefill'"),
    (["pruner=sparsevlm", "pruner.mode=multi"], "pruner sparsevlm: mode='multi' is not valid; choose one of 'single', "
                                                "'progressive'"),
    (["pruner=fastv", "+pruner.window=3"], "pruner fastv: pruner 'fastv' has no option(s) window; its options: "
                                           "dense_warmup, prune_layer, source"),
    (["pruner=vla", "keep=0.001"], "pruner vla: keep=0.001 keeps no token of an image with 256 visual tokens"),
    (["pruner=sparsevlm", "pruner.mode=progressive", "keep=0.25"],
     "pruner sparsevlm: budget 64/256 is below what progressive SparseVLM can reach"),
    # the rest of the command line
    (["tasks=[]"], "tasks=[] selects no task"),
    (["policy.action_noise=0.3"], "policy.action_noise=0.3: policy=vla executes its actions as they are"),
    (["policy=scripted", "policy.action_noise=-0.1"], "policy.action_noise=-0.1 must be in 0..1"),
    (["+model.revision=main"], "unknown model config fields ['revision']"),
    (["model.dtype=int8"], "model.dtype: unknown dtype 'int8'; use auto or one of"),
    (["model.family=octo"], "model openvla_tiny has family 'octo'; valid families: openvla, openvla_oft, pi0"),
    (["model.build_seed=abc"], "model.build_seed='abc' must be an integer"),
    (["model=openvla", "suite=libero_90"], "openvla has no checkpoint for suite libero_90 (official ones: "
                                           "libero_spatial, libero_object, libero_goal, libero_10)"),
    # statistics of a tiny model that is not built yet: what it will be built with
    (["suite=libero_90"], "suite libero_90: no action statistics for 'libero_90' in the checkpoint; it has "
                          "['libero_10', 'libero_goal', 'libero_object', 'libero_spatial'] "
                          "(openvla_tiny as it will be built)"),
    (["model=openvla_oft_tiny", "suite=libero_90"], "suite libero_90: no action statistics for 'libero_90_no_noops'"),
    (["model.unnorm_key=bridge_orig"], "suite libero_object: no action statistics for 'bridge_orig'"),
]


@pytest.mark.parametrize("overrides, expected", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_refused_before_the_run(overrides, expected, cache):
    assert refusal(*overrides).startswith(expected)
    assert not cache.exists()  # judged without building the tiny model


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu(device):
    assert refusal(f"device={device}").startswith(f"device={device}: no CUDA GPU is visible here")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps():
    assert refusal("device=mps") == "device=mps: MPS is not available here; use device=cpu or device=auto"


ACCEPTED = [
    [],
    ["pruner=vla", "keep=0.125"],
    ["pruner=vla", "pruner.prune_layer=7", "pruner.action_layers=[7]", "pruner.gamma=1", "keep=0.25"],
    ["pruner=sparsevlm", "pruner.mode=progressive", "keep=0.5"],
    ["pruner=none", "keep=0.001"],  # the dense model ignores keep: nothing to refuse
    ["model=openvla_oft_tiny", "pruner=fastv", "keep=0.25", "suite=libero_10"],
    ["model=openvla", "pruner=fastv", "pruner.prune_layer=31", "keep=0.25"],  # hub id: the load will tell
    ["device=cpu", "tasks=[0]"],
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(o) or "defaults" for o in ACCEPTED])
def test_valid_configs_pass_without_building_anything(overrides, cache):
    validate(composed(*overrides), POLICIES)
    assert not cache.exists()


# ----------------------------------------------------------------------------------------- checkpoints


def checkpoint_copy(source: Path, target: Path) -> Path:
    """A writable copy of a fixture checkpoint; the large files are symlinks, which edits replace, never follow."""
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.suffix in (".safetensors", ".pt"):
            (target / file.name).symlink_to(file)
        else:
            shutil.copy(file, target / file.name)
    return target


def replace(path: Path, data: bytes | None) -> None:
    """Write `data` at path (None: remove it) without writing through a symlink into the fixture."""
    path.unlink(missing_ok=True)
    if data is not None:
        path.write_bytes(data)


def truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


OPENVLA_FILES = {  # edit of a copy of openvla_tiny_hf -> the start of the error
    "empty directory": (lambda d: [replace(f, None) for f in d.iterdir()], "no config.json in checkpoint directory"),
    "truncated weights": (lambda d: replace(d / "model.safetensors", truncated(d / "model.safetensors")),
                          "cannot read {d}/model.safetensors: not a complete safetensors file"),
    "garbage weights": (lambda d: replace(d / "model.safetensors", b"<html>404 Not Found</html>" * 20),
                        "cannot read {d}/model.safetensors: not a complete safetensors file"),
    "no weights": (lambda d: replace(d / "model.safetensors", None),
                   "no model.safetensors or model.safetensors.index.json in checkpoint directory {d}"),
    "index naming a missing shard": (
        lambda d: (replace(d / "model.safetensors", None), replace(d / "model.safetensors.index.json", json.dumps(
            {"weight_map": {"projector.fc1.weight": "model-00001-of-00002.safetensors"}}).encode())),
        "{d}/model.safetensors.index.json lists shards that are not in {d}: model-00001-of-00002.safetensors"),
    "truncated config.json": (lambda d: replace(d / "config.json", (d / "config.json").read_bytes()[:300]),
                              "cannot read {d}/config.json: not valid JSON"),
    "config.json a list": (lambda d: replace(d / "config.json", b"[]"),
                           "cannot read {d}/config.json: expected a JSON object, found list"),
    "config.json of another architecture": (lambda d: replace(d / "config.json", b'{"model_type": "llama"}'),
                                            "cannot use {d}/config.json: only the fused (two-ViT) OpenVLA vision"),
    "no tokenizer": (lambda d: replace(d / "tokenizer.json", None),
                     "no tokenizer.json or tokenizer.model (tokenizer) in checkpoint directory {d}"),
    "no tokenizer config": (lambda d: replace(d / "tokenizer_config.json", None),
                            "no tokenizer_config.json in checkpoint directory {d}"),
    "no preprocessor config": (lambda d: replace(d / "preprocessor_config.json", None),
                               "no preprocessor_config.json in checkpoint directory {d}"),
    "corrupt preprocessor config": (lambda d: replace(d / "preprocessor_config.json", b"{'size': 224}"),
                                    "cannot read {d}/preprocessor_config.json: not valid JSON"),
    "corrupt dataset_statistics.json": (lambda d: replace(d / "dataset_statistics.json", b"\xff\xfe"),
                                        "cannot read {d}/dataset_statistics.json: not valid JSON"),
}


OFT_FILES = {  # edit of a copy of openvla_oft_tiny_hf -> the start of the error
    "no action head": (lambda d: replace(d / "action_head--150000_checkpoint.pt", None),
                       "checkpoint {d} needs exactly one action_head--*_checkpoint.pt, found none"),
    "two proprio projectors": (
        lambda d: (d / "proprio_projector--5000_checkpoint.pt").symlink_to(
            d / "proprio_projector--150000_checkpoint.pt"),
        "checkpoint {d} needs exactly one proprio_projector--*_checkpoint.pt, found proprio_projector--150000_"
        "checkpoint.pt, proprio_projector--5000_checkpoint.pt"),
    "truncated action head": (
        lambda d: replace(d / "action_head--150000_checkpoint.pt", truncated(d / "action_head--150000_checkpoint.pt")),
        "cannot read {d}/action_head--150000_checkpoint.pt: not a complete torch checkpoint"),
}


BROKEN_FILES = {"openvla": ("openvla_tiny_hf", OPENVLA_FILES), "openvla_oft": ("openvla_oft_tiny_hf", OFT_FILES)}


@pytest.mark.parametrize("model, case", [(m, c) for m, (_, cases) in BROKEN_FILES.items() for c in cases])
def test_broken_checkpoint_files_are_named_before_loading(model, case, fixtures_dir, tmp_path):
    fixture, cases = BROKEN_FILES[model]
    edit, expected = cases[case]
    directory = checkpoint_copy(fixtures_dir / fixture, tmp_path / "ckpt")
    edit(directory)
    message = refusal(f"model={model}", f"model.checkpoint={directory}")
    assert message.startswith(expected.format(d=directory)), message


def test_missing_checkpoint_directory(tmp_path):
    assert refusal("model=openvla", f"model.checkpoint={tmp_path / 'nope'}") == \
        f"checkpoint directory not found: {tmp_path / 'nope'}"


OFT_GIVEN_TO_OPENVLA = ("is an openvla_oft checkpoint (it has action_head--150000_checkpoint.pt, "
                        "proprio_projector--150000_checkpoint.pt), but the model's family is openvla: "
                        "use a model of family openvla_oft, e.g. model=openvla_oft")


@pytest.mark.parametrize("model, fixture, expected", [
    ("openvla", "openvla_oft_tiny_hf", OFT_GIVEN_TO_OPENVLA),
    ("openvla_tiny", "openvla_oft_tiny_hf", OFT_GIVEN_TO_OPENVLA),  # an explicit checkpoint for the tiny model
    ("openvla_oft", "openvla_tiny_hf", "is an openvla checkpoint (it has no action_head--*_checkpoint.pt or "
                                       "proprio_projector--*_checkpoint.pt), but the model's family is openvla_oft: "
                                       "use a model of family openvla, e.g. model=openvla"),
])
def test_checkpoint_of_the_wrong_family_is_refused(model, fixture, expected, fixtures_dir):
    directory = fixtures_dir / fixture
    assert refusal(f"model={model}", f"model.checkpoint={directory}") == f"checkpoint {directory} {expected}"


@pytest.mark.parametrize("model, fixture, suite, key", [
    ("openvla", "openvla_tiny_hf", "libero_90", "'libero_90'"),
    ("openvla_oft", "openvla_oft_tiny_hf", "libero_goal", "'libero_goal_no_noops'"),  # it has spatial and 10 only
])
def test_suite_without_statistics_in_the_checkpoint(model, fixture, suite, key, fixtures_dir):
    directory = fixtures_dir / fixture
    message = refusal(f"model={model}", f"model.checkpoint={directory}", f"suite={suite}")
    assert message.startswith(f"suite {suite}: no action statistics for {key} in the checkpoint; it has [")
    assert f"(checkpoint {directory}); choose statistics with model.unnorm_key=" in message


@pytest.mark.parametrize("model, fixture", [("openvla", "openvla_tiny_hf"), ("openvla_oft", "openvla_oft_tiny_hf")])
def test_good_checkpoints_pass(model, fixture, fixtures_dir):
    validate(composed(f"model={model}", f"model.checkpoint={fixtures_dir / fixture}", "pruner=vla", "keep=0.25",
                      "suite=libero_spatial"), POLICIES)  # a suite the fixture has statistics for


def test_cached_tiny_model_is_checked_not_rebuilt(fixtures_dir, cache):
    """A tiny model in the cache is the checkpoint the run loads: its files are checked as they are."""
    directory = checkpoint_copy(fixtures_dir / "openvla_tiny_hf", cache / "openvla_tiny-seed0")
    config = json.loads((directory / "config.json").read_text())
    replace(directory / "config.json", json.dumps({**config, "build_seed": 0}).encode())  # as the build records it
    validate(composed(), POLICIES)
    assert refusal("suite=libero_90").endswith(f"(checkpoint {directory}); choose statistics with model.unnorm_key=...")
    replace(directory / "model.safetensors", truncated(directory / "model.safetensors"))
    assert refusal().startswith(f"cannot read {directory}/model.safetensors: not a complete safetensors file")
    assert sorted(cache.iterdir()) == [directory]


@pytest.mark.parametrize("model", ["openvla_tiny", "openvla_oft_tiny"])
def test_a_tiny_checkpoint_that_records_no_seed_is_not_loaded_under_the_requested_one(model, fixtures_dir, tmp_path):
    """Weights with no record of their seed (the fixtures, a trained or converted model) used to load under any
    model.build_seed without a word (issue 38); the README says another seed is refused. As it is, they load."""
    fixture = "openvla_oft_tiny_hf" if model == "openvla_oft_tiny" else "openvla_tiny_hf"
    directory = checkpoint_copy(fixtures_dir / fixture, tmp_path / "ckpt")
    for seed in (0, 5):
        assert refusal(f"model={model}", f"model.checkpoint={directory}", f"model.build_seed={seed}",
                       "suite=libero_spatial") == (
            f"checkpoint {directory} records no build_seed, so its weights are not known to be model.build_seed="
            f"{seed}'s: load it as it is with model.build_seed=null, or point model.checkpoint at a new or empty "
            "directory to have the tiny model built there")
    validate(composed(f"model={model}", f"model.checkpoint={directory}", "model.build_seed=null",
                      "suite=libero_spatial"), POLICIES)


def test_tiny_oft_base_awaiting_its_parts_passes_but_a_foreign_base_does_not(fixtures_dir, cache):
    """The tiny OFT is built as the tiny OpenVLA base plus OFT parts added when the policy is built: a base
    of the same seed without the parts yet is fine (its statistics will be the OFT ones); a plain OpenVLA
    that is not that base is a checkpoint of the wrong family."""
    directory = checkpoint_copy(fixtures_dir / "openvla_tiny_hf", cache / "openvla_oft_tiny-seed0")
    config = json.loads((directory / "config.json").read_text())
    replace(directory / "config.json", json.dumps({**config, "build_seed": 0}).encode())
    validate(composed("model=openvla_oft_tiny", "suite=libero_goal"), POLICIES)
    replace(directory / "config.json", json.dumps(config).encode())
    assert refusal("model=openvla_oft_tiny").startswith(f"checkpoint {directory} is an openvla checkpoint")
    assert not (directory / "action_head--0_checkpoint.pt").exists()


# ------------------------------------------------------------------------------------ through the CLI


CLI_CASES = [
    (["pruner=vla", "pruner.prune_layer=2.5"], "error: pruner vla: prune_layer=2.5 must be an integer"),
    (["pruner=fastv", "pruner.prune_layer=8"], f"error: pruner fastv: prune_layer=8 must be in 1..7 {TINY_LAYERS}"),
    (["pruner=vla", "keep=0.001"], "error: pruner vla: keep=0.001 keeps no token"),
    (["tasks=[]"], "error: tasks=[] selects no task"),
    (["suite=libero_90"], "error: suite libero_90: no action statistics for 'libero_90'"),
]


@pytest.fixture(scope="module")
def cli_refusals(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """`python -m evaluate model=openvla_tiny <overrides>` for every case, in one interpreter
    (conftest.run_in_one_interpreter), with an empty tiny-model cache of their own; the other CLI tests here run the
    CLI in a process of its own."""
    root = tmp_path_factory.mktemp("cli_cases")
    commands = [["-m", "evaluate", "model=openvla_tiny", *overrides, f"output_root={root / str(i) / 'runs'}"]
                for i, (overrides, _) in enumerate(CLI_CASES)]
    results = run_in_one_interpreter(commands, root, env={"VLA_PRUNER_CACHE": str(root / "cache")})
    return root, {" ".join(overrides): result for (overrides, _), result in zip(CLI_CASES, results)}


@pytest.mark.parametrize("overrides, expected", CLI_CASES, ids=[" ".join(o) for o, _ in CLI_CASES])
def test_cli_prints_one_error_line(overrides, expected, cli_refusals):
    """Each case is still the whole CLI's `python -m evaluate` path, its own command line, output and exit status,
    only not in an interpreter of its own: a setting let through (cut off after 60 s), another last line, a zero
    exit status, a traceback, a tiny model built or a run directory made still fails its case."""
    root, results = cli_refusals
    result = results[" ".join(overrides)]
    assert result.returncode is not None, f"{overrides} was not refused within 60 s"
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr
    i = CLI_CASES.index((overrides, expected))
    assert not (root / "cache").exists() and not (root / str(i) / "runs").exists()


@NO_CUDA
def test_cli_refuses_cuda_without_a_gpu(tmp_path):
    result = run_cli("device=cuda", f"output_root={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: device=cuda: no CUDA GPU is visible here")


def test_cli_refuses_a_truncated_checkpoint_and_the_wrong_family(fixtures_dir, tmp_path):
    """Both commands are `python -m evaluate` with their own command line, output and exit status, run one after
    the other in one interpreter (conftest.run_in_one_interpreter): a checkpoint let through (cut off after 60 s),
    another last line or a traceback still fails."""
    directory = checkpoint_copy(fixtures_dir / "openvla_tiny_hf", tmp_path / "ckpt")
    replace(directory / "model.safetensors", truncated(directory / "model.safetensors"))
    cases = [
        ("openvla", directory, f"error: cannot read {directory}/model.safetensors: not a complete safetensors file"),
        ("openvla", fixtures_dir / "openvla_oft_tiny_hf", "error: checkpoint "),
    ]
    commands = [["-m", "evaluate", f"model={model}", f"model.checkpoint={checkpoint}",
                 f"output_root={tmp_path / 'runs'}"] for model, checkpoint, _ in cases]
    for (_, _, expected), result in zip(cases, run_in_one_interpreter(commands, tmp_path)):
        assert result.returncode not in (0, None) and "Traceback" not in result.stderr, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(expected), result.stderr
    assert "is an openvla_oft checkpoint" in last


# ------------------------------------------------------------------------------------------ FLOPs CLI


FLOPS_REFUSED = [
    (["keep=0"], "error: keep=0.0 is outside (0, 1]"),
    (["keep=1.5", "pruner=none"], "error: keep=1.5 is outside (0, 1]"),
    (["keep=half"], "error: Error merging override keep=half: Value 'half' of type 'str' could not be converted"),
    (["prune_layer=2"], "error: Could not override 'prune_layer': Key 'prune_layer' not in 'EvalConfig'"),
    (["pruner.typo=1"], "error: Could not override 'pruner.typo': Key 'typo' is not in struct"),
    (["+pruner.typo=1"], "error: pruner none: pruner 'none' has no option(s) typo"),
    (["pruner=fastv", "keep=0.001"], "error: pruner fastv: keep=0.001 keeps no token"),
    (["pruner=vla", "pruner.prune_layer=0"], f"error: pruner vla: prune_layer=0 must be in 1..7 {TINY_LAYERS}"),
    (["pruner=vla", "pruner.prune_layer=8"], f"error: pruner vla: prune_layer=8 must be in 1..7 {TINY_LAYERS}"),
    (["model=openvla", "pruner=fastv", "pruner.prune_layer=32"],
     "error: pruner fastv: prune_layer=32 must be in 1..31 for a model with 32 layers"),
    (["pruner=fastv", "pruner.prune_layer=2.5"], "error: pruner fastv: prune_layer=2.5 must be an integer"),
    (["pruner=sparsevlm", "pruner.mode=multi"], "error: pruner sparsevlm: mode='multi' is not valid"),
    (["pruner=sparsevlm", "pruner.mode=progressive", "keep=0.25"], "error: pruner sparsevlm: budget 64/256 is below"),
    (["model.family=octo"], "error: model 'openvla_tiny' has family 'octo'; known: openvla, openvla_oft, pi0"),
    (["prompt_tokens=0"], "error: prompt_tokens=0 must be a positive integer"),
    (["prompt_tokens=many"], "error: prompt_tokens=many must be a positive integer"),
    (["pruner=fast"], "error: unknown pruner 'fast'; valid choices: divprune, fastv, gated_vla_cache, none, random, "
                       "sparsevlm, specprune, vla, vla_adp, vla_cache"),
]


@pytest.mark.parametrize("argv, expected", FLOPS_REFUSED, ids=[" ".join(a) for a, _ in FLOPS_REFUSED])
def test_flops_cli_refuses_what_a_run_refuses(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        flops.main(argv)
    assert str(exit_.value.code).startswith(expected)
    assert "\n" not in str(exit_.value.code) and capsys.readouterr().out == ""


def test_flops_cli_error_is_one_line_without_traceback():
    result = subprocess.run([sys.executable, "-m", "evaluate.flops", "pruner=vla", "pruner.prune_layer=8"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip() == f"error: pruner vla: prune_layer=8 must be in 1..7 {TINY_LAYERS}"
