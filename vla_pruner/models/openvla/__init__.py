"""OpenVLA: model.py (fused ViTs -> projector -> Llama-2, greedy action tokens), config.py (config.json), vision.py
(the fused ViTs, projector), processor.py (prompt, tokenizer, pixel values), action_tokenizer.py (tokens <->
actions), tiny.py / tiny_configs.py (the seeded small model), cost.py (dimensions without weights, MACs; shared with
OpenVLA-OFT), family.py (the record the harness reads)."""
