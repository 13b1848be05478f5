"""pi0's sizes, as typed data: the two Gemmas, the SigLIP tower and the flow-matching settings.

Sizes come from the checkpoint's tensor shapes (`Pi0Config.from_shapes`): pi0's Gemmas have one key/value head,
so head_dim = rows of k_proj and heads = rows of q_proj / head_dim. SigLIP's head count is the one size no shape
tells; it comes from `tiny_dims.json` when the checkpoint has one, else from the So400m tower (16 heads of 72).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class GemmaDims:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    head_dim: int
    num_kv_heads: int = 1


@dataclass(frozen=True)
class SiglipDims:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int = 14
    image_size: int = 224

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class Pi0Config:
    vlm: GemmaDims
    expert: GemmaDims
    vision: SiglipDims
    vocab_size: int
    num_cameras: int = 3  # image slots of the prefix (LIBERO: agent view, wrist, one empty slot)
    max_token_len: int = 48
    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    relative_actions: bool = False  # the model predicts action - state on the first 6 dims (openpi pi0_libero)

    @property
    def prefix_length(self) -> int:
        return self.num_cameras * self.vision.num_patches + self.max_token_len

    @property
    def suffix_length(self) -> int:
        return 1 + self.chunk_size  # the state token, then the action tokens


SO400M_HEADS = {1152: 16}  # SigLIP So400m/14: width 1152, 16 heads of 72
# The real pi0 (openpi `gemma_2b` + `gemma_300m` + So400m/14 at 224 px): FLOPs of pi0 without a checkpoint.
REAL_PI0 = Pi0Config(
    vlm=GemmaDims(width=2048, depth=18, mlp_dim=16384, num_heads=8, head_dim=256),
    expert=GemmaDims(width=1024, depth=18, mlp_dim=4096, num_heads=8, head_dim=256),
    vision=SiglipDims(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
    vocab_size=257152,
)


def gemma_dims(shapes: Mapping[str, tuple[int, ...]], prefix: str, width: int) -> GemmaDims:
    """A Gemma's sizes from the shapes of its `prefix`layers.N.* tensors (one key/value head)."""
    depth = len({k[len(prefix):].split(".")[1] for k in shapes if k.startswith(prefix + "layers.")})
    if depth == 0:
        raise ValueError(f"no {prefix}layers.* tensors")
    head_dim = shapes[f"{prefix}layers.0.self_attn.k_proj.weight"][0]
    q_rows = shapes[f"{prefix}layers.0.self_attn.q_proj.weight"][0]
    return GemmaDims(width=width, depth=depth, mlp_dim=shapes[f"{prefix}layers.0.mlp.gate_proj.weight"][0],
                     num_heads=q_rows // head_dim, head_dim=head_dim)


def siglip_dims(shapes: Mapping[str, tuple[int, ...]], prefix: str, heads: int | None) -> SiglipDims:
    hidden, _, patch, _ = shapes[f"{prefix}embeddings.patch_embedding.weight"]
    positions = shapes[f"{prefix}embeddings.position_embedding.weight"][0]
    side = round(positions ** 0.5)
    heads = heads or SO400M_HEADS.get(hidden)
    if heads is None:
        raise ValueError(f"a SigLIP tower of width {hidden} needs its head count: put "
                         '{"vision": {"num_attention_heads": N}} in tiny_dims.json beside the weights')
    depth = len({k[len(prefix):].split(".")[2] for k in shapes if k.startswith(prefix + "encoder.layers.")})
    return SiglipDims(hidden_size=hidden, intermediate_size=shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"][0],
                      num_hidden_layers=depth, num_attention_heads=heads, patch_size=patch, image_size=side * patch)
