"""The vocabulary of the policies trained here: every word LIBERO and LIBERO-PRO can give a policy has a token of its
own, so a paraphrase reaches the model as a paraphrase, never as `<unk>` (issue 37)."""
from evaluate.envs.vocabulary import every_instruction, libero_instructions
from vla_pruner.models.openvla.processor import prompt_for
from vla_pruner.models.openvla.tiny import SPECIAL_IDS, UNK, build_tokenizer


def test_every_libero_and_libero_pro_instruction_tokenizes_without_unk():
    texts = sorted(set(every_instruction()))
    tokenizer = build_tokenizer(texts)
    unknown = {text for text in texts if SPECIAL_IDS[UNK] in tokenizer(prompt_for(text))["input_ids"]}
    assert not unknown
    paraphrase = "grab alphabet soup and put it into basket"  # libero_object_lan task 0
    assert paraphrase in texts and "put the plate on the stove" in texts  # a _lan and a _task instruction
    assert set(libero_instructions()) < set(texts)


def test_the_tiny_models_vocabulary_is_libero_s_own():
    """The seeded tiny models' tokenizer stays what their cached checkpoints were built from: LIBERO's instructions."""
    tokenizer = build_tokenizer(libero_instructions())
    assert SPECIAL_IDS[UNK] in tokenizer(prompt_for("grab alphabet soup"))["input_ids"]
