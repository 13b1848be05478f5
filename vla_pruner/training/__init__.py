"""Behaviour cloning of an OpenVLA-OFT-architecture policy on recorded demonstrations (the OFT recipe: two
cameras + proprio, one bidirectional pass, L1-regressed 8-step action chunks with parallel decoding, random-crop
augmentation), saved in the official OFT checkpoint layout so the harness loads it like a released one.

Knows nothing of LIBERO's files: it trains on `ChunkData` arrays (model-view frames, states, actions per episode);
`evaluate/demo_data.py` builds them from the harness's demonstration files."""
