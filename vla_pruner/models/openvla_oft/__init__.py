"""OpenVLA-OFT: model.py (OpenVLA with two cameras, a proprio token and an L1 action head), action_head.py,
proprio.py, tiny.py (the seeded small model's OFT parts), family.py (the record; its cost is OpenVLA's)."""
