"""VLA models in the official Hugging Face checkpoint format.

openvla.py (model and decode stages), llama.py (decoder-layer loop, KV cache), vision.py (fused ViTs,
projector), config.py / checkpoint.py (config.json, strict weight loading), processor.py (prompt, tokenizer,
pixel values), preprocess.py (LIBERO frame -> 224x224 image, TF-free), action_tokenizer.py (tokens <->
actions), tiny.py (the seeded small model), libero_norm_stats.py (LIBERO action statistics).
"""
