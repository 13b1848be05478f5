"""The instructions LIBERO can give a policy: the vocabulary of the word-level tokenizers the project builds (the
seeded tiny models', and the policies trained here).

`libero_instructions` is every task instruction of the LIBERO suites (the tiny models' vocabulary, fixed: their
cached checkpoints were built from it). `every_instruction` adds what LIBERO-PRO's perturbed suites give a policy
(the `_lan` paraphrases, the `_task` instructions of other tasks) and the scenes' own BDDL wording, so that a policy
trained here meets a paraphrase as a paraphrase, word by word, never as `<unk>`. Generators: the benchmark files are
read only when a tokenizer is actually built.
"""
from __future__ import annotations

from typing import Iterator

from evaluate.envs.suites import benchmark_suites


def libero_instructions() -> Iterator[str]:
    """Every LIBERO task instruction (the libero benchmark's suites, in suite order)."""
    from evaluate.envs.libero import load_suite  # quiet: the benchmark's own prints go to the log

    for name in benchmark_suites("libero"):
        yield from (task.instruction for task in load_suite(name))


def every_instruction() -> Iterator[str]:
    """LIBERO's instructions, then every LIBERO-PRO suite's: the one its policy is given and the scene's own."""
    from evaluate.envs.libero_pro import load_suite

    yield from libero_instructions()
    for name in benchmark_suites("libero_pro"):
        for task in load_suite(name):
            yield from (task.instruction, task.scene_instruction)
