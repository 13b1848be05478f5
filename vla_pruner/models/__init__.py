"""VLA models, one package per family (openvla/, openvla_oft/, pi0/: model, config, checkpoint reading, tiny build,
cost, family record), and the pieces they share: llama.py (the decoder-layer loop, KV cache), checkpoint.py
(config.json, strict weight loading), seeded.py (building a tiny checkpoint once), preprocess.py (upright frame ->
224x224 image, TF-free), statistics.py (q01/q99 bounds). A benchmark's conventions (its statistics, robot state,
frame orientation, gripper) are the harness's (evaluate/envs/).
"""
