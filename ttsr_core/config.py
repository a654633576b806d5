"""Frozen TTSR configurations and named presets."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

# The compact checkpoint shipped with the project (models/ttsr-lite/MODEL_CARD.md): the one place its
# path is written; the CLI's default model, the benchmarks and the tests take it from here.
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "ttsr-lite" / "ttsr-lite-x4.safetensors"
# A checkpoint's layout, told from its header and key names without torch (the CLI checks --model
# before it imports torch): our format names itself; the authors' state dict has the main net's first conv.
CHECKPOINT_FORMAT = "refsr-ttsr"
AUTHORS_FIRST_KEY = "MainNet.SFE.conv_head.weight"

SCALE = 4  # TTSR's super-resolution factor: LR↑, Ref↓↑ and the three texture scales are built on it
# One 3×3 lv3 patch covers 12×12 reference pixels: the smallest reference that holds a patch.
MIN_REF_SIDE = 3 * SCALE


class Precision(StrEnum):
    """A floating-point format for matrix products or autocast; torch dtypes by the same names."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"

    @classmethod
    def parse(cls, value: object, what: str) -> Precision | None:
        """None stays None (the float32 default); a name becomes its member; anything else is a ValueError."""
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{what} must be one of {[p.value for p in cls]} or None, got {value!r}") from None


class Backend(StrEnum):
    """How the main network runs at inference; the eager ``MainNet`` is the reference."""

    EAGER = "eager"  # MainNet.forward, as trained
    FUSED = "fused"  # ttsr_core.accel.fused: in-place, 1×1 convs before upsampling, GEMM bicubic (no autograd)


class SearchMode(StrEnum):
    """How hard attention finds, for each query patch, its most relevant reference patch."""

    EXACT = "exact"  # every query against every reference position (the paper)
    FAST = "fast"  # coarse-to-fine: match on a pooled grid, refine in a local window


@dataclass(frozen=True)
class TTSRConfig:
    """Architecture of one TTSR network.

    Vocabulary follows BasicSR: ``num_feat`` channels in the main network, ``num_block`` residual
    blocks per stage (SFE, ×1, ×2, ×4 stages), ``lte_channels`` for the texture extractor's
    relu1_1 / relu2_1 / relu3_1 levels (VGG19 layout: 64/128/256 in the paper).
    """

    num_feat: int = 64
    num_block: tuple[int, int, int, int] = (16, 16, 8, 4)
    res_scale: float = 1.0
    lte_channels: tuple[int, int, int] = (64, 128, 256)
    upscale: int = 4
    # Add bicubic LR↑ to the output: the network learns a residual. Not in the paper; it lets a
    # small network start from bicubic quality instead of from zero (see issue notes / model card).
    global_skip: bool = False
    # Gate the soft attention: S ↦ S·sigmoid(a·(S − b)) with learned a, b (not in the paper). Lets the
    # network shut texture off where the best match is poor, so a wrong reference costs nothing.
    relevance_gate: bool = False

    def __post_init__(self) -> None:
        if self.upscale != 4:
            raise ValueError(f"TTSR transfers texture at ×1/×2/×4 and only supports upscale=4, got {self.upscale}")
        if self.num_feat < 2 or self.num_feat % 2:
            raise ValueError(f"num_feat must be an even number ≥ 2, got {self.num_feat}")
        if len(self.num_block) != 4 or any(b < 0 for b in self.num_block):
            raise ValueError(f"num_block must be 4 non-negative counts (SFE, ×1, ×2, ×4), got {self.num_block}")
        if len(self.lte_channels) != 3 or any(c < 1 for c in self.lte_channels):
            raise ValueError(f"lte_channels must be 3 positive channel counts, got {self.lte_channels}")
        if not self.res_scale > 0:
            raise ValueError(f"res_scale must be positive, got {self.res_scale}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TTSRConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TTSR config keys {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        for name in ("num_block", "lte_channels"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        return cls(**values)


PRESETS: dict[str, TTSRConfig] = {
    # The paper (Yang et al., CVPR 2020): 16/16/8/4 residual blocks, 64 features, VGG19 LTE.
    "ttsr": TTSRConfig(),
    # Compact CPU model. Residual blocks at ×1 cost 1/16 of those at ×4, so depth sits at the LR
    # scale; the LTE is a quarter of the paper's width, which cuts its cost (three passes per
    # sample, dominating the paper's training time) by ~16×. Measured in benchmarks/README.md
    # ("Preset cost"): 6.4× faster inference and 4.2× faster training steps than the paper preset.
    "ttsr-lite": TTSRConfig(
        num_feat=32, num_block=(6, 6, 2, 1), lte_channels=(16, 32, 64), global_skip=True
    ),
}


def preset(name: str) -> TTSRConfig:
    """Return the named preset (``ttsr`` or ``ttsr-lite``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown TTSR preset {name!r}; choose one of {sorted(PRESETS)}") from None


@dataclass(frozen=True)
class SearchConfig:
    """How relevance search runs; independent of the weights, so not stored in checkpoints."""

    mode: SearchMode = SearchMode.EXACT
    # Upper bound on the working memory of one search chunk (relevance block + unfolded patches).
    # 64 MB: same speed as 256 MB on the CUFED5-size and 720p cases, lower peak RSS
    # (benchmarks/README.md, "Search memory").
    memory_budget_mb: float = 64.0
    # Fast mode: pooling factor of the coarse grid and half-width of the dense refinement window
    # (in lv3 positions, around the up-projected coarse match).
    coarse_factor: int = 4
    refine_radius: int = 6
    # Fast mode: also refine around the (shift-corrected) matches of coarse query cells up to this
    # many cells away; 1 = the 3×3 neighbourhood, which repairs coarse matches that straddle an
    # object border at little cost (duplicate windows are searched once).
    coarse_neighbours: int = 1
    # Matrix products in this precision (None = float32). bfloat16 is ~4× faster on AVX-512-BF16 CPUs.
    matmul_dtype: Precision | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SearchMode(self.mode))
        if not self.memory_budget_mb > 0:
            raise ValueError(f"memory_budget_mb must be positive, got {self.memory_budget_mb}")
        if self.coarse_factor < 1:
            raise ValueError(f"coarse_factor must be ≥ 1, got {self.coarse_factor}")
        if self.refine_radius < 0:
            raise ValueError(f"refine_radius must be ≥ 0, got {self.refine_radius}")
        if self.coarse_neighbours < 0:
            raise ValueError(f"coarse_neighbours must be ≥ 0, got {self.coarse_neighbours}")
        object.__setattr__(self, "matmul_dtype", Precision.parse(self.matmul_dtype, "matmul_dtype"))


@dataclass(frozen=True)
class TileConfig:
    """Overlapping-tile inference; independent of the weights, like :class:`SearchConfig`.

    Sizes are in LR pixels. Every tile searches the whole references, so tiling changes only the
    network's view of the LR image near tile borders, never which texture is chosen.
    """

    # Tile side; None processes the whole image in one pass.
    tile: int | None = None
    # Pixels shared by neighbouring tiles; the central half of each shared strip is cross-faded with
    # a raised-cosine ramp, the outer quarters (most affected by the tile's zero padding) get weight 0.
    overlap: int = 16

    def __post_init__(self) -> None:
        if self.overlap < 0:
            raise ValueError(f"overlap must be ≥ 0, got {self.overlap}")
        if self.tile is not None and (self.tile < 1 or self.tile < 2 * self.overlap):
            raise ValueError(f"tile must be ≥ 1 and ≥ 2 × overlap ({2 * self.overlap}), got {self.tile}")
