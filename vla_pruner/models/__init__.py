"""VLA models in the official Hugging Face checkpoint format.

openvla.py / openvla_oft.py (the models; their LLM runs through vla_pruner.engine), llama.py (the decoder-layer
loop, KV cache), vision.py (fused ViTs, projector), config.py / checkpoint.py (config.json, strict weight
loading), processor.py (prompt, tokenizer, pixel values), preprocess.py (LIBERO frame -> 224x224 image, TF-free),
action_tokenizer.py (tokens <-> actions), proprio.py, action_head.py (OFT's parts), statistics.py (q01/q99
bounds), tiny.py / tiny_oft.py (the seeded small models), libero_norm_stats.py (LIBERO action statistics);
pi0.py (pi0: PaliGemma prefix + action expert), pi0_layers.py, pi0_config.py, pi0_checkpoint.py (LeRobot and
openpi layouts).
"""
