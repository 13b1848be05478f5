"""pi0: model.py (PaliGemma prefix + a Gemma action expert, flow matching), layers.py, config.py, checkpoint.py
(LeRobot and openpi layouts), tokenizer.py, inputs.py (images), tiny.py (the seeded small model), pruned.py (the
pruned prefix), cost.py (dimensions without weights, MACs), family.py (the record the harness reads)."""
