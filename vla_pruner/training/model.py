"""The trainable policy: an OpenVLA-OFT of a given (small) architecture with a fresh, seeded initialisation, its
forward pass with gradients, and its export in the official OFT checkpoint layout."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from vla_pruner.models.openvla_oft.action_head import L1RegressionActionHead
from vla_pruner.models.checkpoint import STATS_FILE, WEIGHTS_FILE, to_stored_key
from vla_pruner.models.openvla.config import OpenVLAConfig
from vla_pruner.models.openvla.model import OpenVLA, with_empty_token
from vla_pruner.models.openvla_oft.model import ACTION_HEAD_FILE, CHUNK, PROPRIO_FILE, READOUT_ROWS, OpenVLAOFT
from vla_pruner.models.openvla.processor import ImageProcessor
from vla_pruner.models.openvla_oft.proprio import ProprioProjector

INIT_STD = 0.02  # Llama's initializer_range: the language model's matrices and embeddings start here
# The vocabulary's embedding and LM head are 8.2M of the small model's 10.5M parameters, and an OFT policy reads
# about 100 embedding rows and never the LM head: stored narrow (embedding bfloat16, LM head float8), the checkpoint
# stays under 25 MB; every other tensor is stored float32. What is evaluated is the stored checkpoint.
STORED_DTYPES = {"language_model.model.embed_tokens.weight": torch.bfloat16,
                 "language_model.lm_head.weight": torch.float8_e4m3fn}


def new_oft_model(config: dict[str, Any], seed: int) -> OpenVLAOFT:
    """A fresh OpenVLA-OFT of architecture `config` (an OpenVLA config.json dict), in train mode: timm's ViT
    init, PyTorch's default for the projectors and action head, N(0, 0.02) for the language model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = OpenVLA(OpenVLAConfig.from_dict(config))
        with torch.no_grad():
            for module in base.language_model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                    module.weight.normal_(0.0, INIT_STD)
        width = base.language_model.config.hidden_size
        model = OpenVLAOFT(base, ProprioProjector(width), L1RegressionActionHead(width, chunk=CHUNK))
    return model.train()


def pixel_values(processor: ImageProcessor, frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, cameras, 224, 224, 3] model-view frames -> [B, 6 * cameras, 224, 224], through the checkpoint's
    own image processor, as the policy computes them at evaluation."""
    return torch.cat([torch.cat([processor(Image.fromarray(f)) for f in sample], dim=1) for sample in frames])


def predict_chunks(model: OpenVLAOFT, input_ids: torch.Tensor, pixels: torch.Tensor,
                   proprio: np.ndarray) -> torch.Tensor:
    """Normalised action chunks [B, 8, 7] for one prompt and B samples: the policy's own query path (the dense
    engine's bidirectional pass), differentiable."""
    embeds = model.multimodal_embeds(with_empty_token(input_ids), model.encode_images(pixels),
                                     model.project_proprio(proprio))
    return model.action_chunk(model.run_llm(embeds).last_rows(READOUT_ROWS))


def save_oft_checkpoint(model: OpenVLAOFT, directory: Path, config: dict[str, Any], statistics: dict[str, Any],
                        step: int) -> None:
    """Write `model` into `directory` in the official OFT layout: config.json (with `norm_stats`), model.safetensors,
    `action_head--{step}_checkpoint.pt`, `proprio_projector--{step}_checkpoint.pt` (DDP `module.` prefix, as the
    official files) and dataset_statistics.json. The tokenizer and preprocessor config are the caller's."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.base.state_dict().items():
        value = value.detach().contiguous()
        tensors[to_stored_key(key)] = value.to(STORED_DTYPES.get(key, torch.float32))
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps({**config, "norm_stats": statistics}, indent=2))
    (directory / STATS_FILE).write_text(json.dumps(statistics, indent=2))
    for name, module in ((ACTION_HEAD_FILE, model.action_head), (PROPRIO_FILE, model.proprio_projector)):
        for old in directory.glob(f"{name}--*_checkpoint.pt"):
            old.unlink()
        torch.save({f"module.{k}": v.detach().float() for k, v in module.state_dict().items()},
                   directory / f"{name}--{step}_checkpoint.pt")


def chunk_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OFT's objective: the mean L1 distance between normalised chunks."""
    return (predicted - target).abs().mean()
