"""Enhancement of one photo: ×4 through the texture transformer, resized to the asked scale, saved atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from durable.files import sha256_file
from pipeline import images
from pipeline.attention import AttentionMaps, save_attention
from pipeline.hashed_read import load_verified
from pipeline.matching.restore import Restoration, composite, restore_from_original
from pipeline.params import OUTPUT_EXTENSIONS, WRITE_FALLBACK, EnhanceParams
from pipeline.provenance.facts import RestoredFrom
from pipeline.provenance.stamp import ProvenanceStamp, StampRequest, ingredients_for, thumbnail_jpeg
from pipeline.vocabulary import CredentialsState
from ttsr_core.arrays import resize_bicubic
from ttsr_core.config import MIN_REF_SIDE, SCALE
from ttsr_core.device import resolve_device
from ttsr_core.model.consistency import make_consistent
from ttsr_core.model.inference import super_resolve
from ttsr_core.model.net import TTSR
from ttsr_core.model.reference_cache import ReferenceCache

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

JOB_KEY_VERSION = 1  # bump when the meaning of the key's fields changes


def stable_hash(payload: Any) -> str:
    """sha256 hex of a JSON-able payload in canonical form (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def job_key(
    target_sha256: str, ref_sha256s: Sequence[str], model_sha256: str, params: EnhanceParams | Mapping[str, object],
    *, restored_from: str | None = None,
) -> str:
    """sha256 hex of (target, ordered references, model, pixel parameters): the idempotency key.

    Two enhancements with the same key produce the same output, so a stored succeeded one can be
    reused; anything that changes pixels (another reference, its rank, the weights, the scale,
    the search mode, a restoration from the copy's original `restored_from`) gives another key and
    therefore a new record beside the old one. Without a restoration the key is what it always was.
    No references: the target enhanced from itself (the reference gate refused every candidate).
    """
    for name, value in (("target_sha256", target_sha256), ("model_sha256", model_sha256), *(
        (f"ref_sha256s[{i}]", r) for i, r in enumerate(ref_sha256s)
    )):
        if not isinstance(value, str) or len(value) != 64:
            raise ValueError(f"{name} must be a 64-character hex digest, got {value!r}")
    pixel = params.pixel_params() if isinstance(params, EnhanceParams) else dict(params)
    payload = {
        "v": JOB_KEY_VERSION,
        "target": target_sha256,
        "refs": list(ref_sha256s),
        "model": model_sha256,
        "params": pixel,
    }
    if restored_from is not None:
        if restored_from not in ref_sha256s:
            raise ValueError(f"restored_from {restored_from!r} must be one of the references")
        payload["restored_from"] = restored_from
    return stable_hash(payload)


def output_format_for(input_format: str | None, params: EnhanceParams) -> str:
    """Pillow format of the output: the asked one, else the input's (HEIC/MPO → JPEG)."""
    if params.output_format is not None:
        return params.output_format
    name = (input_format or "").upper()
    name = WRITE_FALLBACK.get(name, name)
    return name if name in OUTPUT_EXTENSIONS else "PNG"


def output_path_for(out_dir: PathLike, rel_path: str, fmt: str) -> Path:
    """Mirrored output path: <out_dir>/<rel_path>, with the extension of `fmt` when it differs."""
    rel = PurePosixPath(rel_path)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise ValueError(f"rel_path must be a relative path inside the album, got {rel_path!r}")
    if fmt not in OUTPUT_EXTENSIONS:
        raise ValueError(f"fmt must be one of {sorted(OUTPUT_EXTENSIONS)}, got {fmt!r}")
    same_format = Image.registered_extensions().get(rel.suffix.lower()) == fmt
    name = rel.name if same_format else rel.stem + OUTPUT_EXTENSIONS[fmt]
    return Path(out_dir, *rel.parent.parts, name)


def plan_output_paths(out_dir: PathLike, targets: Iterable[tuple[str, str | None]], params: EnhanceParams
                      ) -> dict[str, Path]:
    """Output path of every target of one run, ``{rel_path: path}``, no two alike.

    targets: (rel_path, input Pillow format). Each gets :func:`output_path_for`, unless a format
    change makes two targets share it (``a.jpg`` and ``a.png``, both to PNG): then the converted ones
    keep their whole name (``a.jpg.png``), so neither output overwrites the other. Were a path still
    shared (the album also holds a PNG called ``a.jpg.png``), a target named like its output keeps
    it and the others, in path order, get ``~2``, ``~3``… before the extension. Paths compare
    case-insensitively, as on macOS and Windows disks.
    """
    targets = sorted(targets)
    fmts = {rel: output_format_for(fmt, params) for rel, fmt in targets}
    plain = {rel: output_path_for(out_dir, rel, fmts[rel]) for rel, _ in targets}
    count = Counter(str(p).casefold() for p in plain.values())
    planned: dict[str, Path] = {}
    for rel, _ in targets:
        path = plain[rel]
        if count[str(path).casefold()] > 1 and PurePosixPath(rel).name != path.name:
            path = path.with_name(PurePosixPath(rel).name + OUTPUT_EXTENSIONS[fmts[rel]])
        planned[rel] = path
    taken: set[str] = set()
    # A target whose output keeps its own file name claims it first; the renamed ones follow.
    for rel, path in sorted(planned.items(), key=lambda kv: (PurePosixPath(kv[0]).name != kv[1].name, kv[0])):
        candidate, n = path, 1
        while str(candidate).casefold() in taken:
            n += 1
            candidate = path.with_name(f"{path.stem}~{n}{path.suffix}")
        taken.add(str(candidate).casefold())
        planned[rel] = candidate
    return planned


def fit_reference(ref: np.ndarray, target_long_side: int, factor: float) -> np.ndarray:
    """Reduce a reference (never enlarge) so its long side ≤ factor × target_long_side."""
    return images.shrink(ref, max(1, round(factor * target_long_side)))


def _tiling_kwargs(params: EnhanceParams, lr_shape: tuple[int, ...]) -> dict[str, object]:
    """ttsr_core's tiling arguments when the target is larger than one tile, else none (one pass)."""
    if params.tile is None or max(lr_shape[:2]) <= params.tile:
        return {}
    return {"tile": params.tile, "tile_overlap": params.tile_overlap}


@dataclass(frozen=True)
class SRArrays:
    """Pixels of one enhancement before they are written."""

    image: np.ndarray  # (round(h*outscale), round(w*outscale), 3) uint8
    soft_attention: np.ndarray  # (h, w) float32, relevance of the texture found per LR position
    hard_attention: np.ndarray  # (h, w) int64, index into the union of the references' lv3 positions
    ref_grids: tuple[tuple[int, int], ...]  # lv3 (rows, cols) of each fitted reference


def enhance_arrays(
    model: TTSR,
    lr: np.ndarray,
    refs: Sequence[np.ndarray],
    params: EnhanceParams = EnhanceParams(),
    *,
    device: str | torch.device | None = "cpu",
    reference_cache: ReferenceCache | None = None,
) -> SRArrays:
    """lr (h, w, 3) uint8 and references (each (H, W, 3) uint8) → output at `params.outscale`.

    References are first fitted to `ref_side_factor` × the target's long side; no references = the
    target enhanced from itself (its LR↑ as the reference).
    """
    h, w = lr.shape[:2]
    if not refs:
        # Enhanced from itself: its own LR↑ is the reference, so nothing foreign is transferred (the
        # single-image path the model is trained on, with no texture to paste).
        refs = [resize_bicubic(lr, w * SCALE, h * SCALE)]
    fitted = [fit_reference(r, max(h, w), params.ref_side_factor) for r in refs]
    for ref, fit in zip(refs, fitted):
        too_small = (min(fit.shape[:2]) // SCALE) * SCALE < MIN_REF_SIDE
        if too_small and (min(ref.shape[:2]) // SCALE) * SCALE >= MIN_REF_SIDE:
            # The reference was big enough: shrinking it to the target's scale is what made it unusable.
            raise ValueError(
                f"the target is too small to enhance ({w}×{h} px): its references are fitted to "
                f"{params.ref_side_factor:g}× its long side, {fit.shape[1]}×{fit.shape[0]} px here, less than one "
                f"{MIN_REF_SIDE}×{MIN_REF_SIDE} texture patch"
            )
    result = super_resolve(
        model, lr, fitted, search=params.search, device=device, amp_dtype=params.amp_dtype,
        reference_cache=reference_cache, **_tiling_kwargs(params, lr.shape),  # type: ignore[arg-type]
    )
    image = make_consistent(result.image, lr, params.consistency)  # (4h, 4w, 3)
    if params.outscale != SCALE:
        size = (max(1, round(w * params.outscale)), max(1, round(h * params.outscale)))
        # LANCZOS when shrinking (anti-aliasing), BICUBIC beyond ×4 (nothing to alias).
        method = Image.Resampling.LANCZOS if params.outscale < SCALE else Image.Resampling.BICUBIC
        image = np.asarray(Image.fromarray(image).resize(size, method))
    grids = tuple((r.shape[0] // SCALE, r.shape[1] // SCALE) for r in fitted)
    return SRArrays(
        np.ascontiguousarray(image),
        np.asarray(result.soft_attention, dtype=np.float32),
        np.asarray(result.hard_attention),
        grids,
    )


@dataclass(frozen=True)
class EnhanceResult:
    """What one enhancement wrote, and how long each step took (seconds)."""

    output_path: Path
    output_sha256: str
    attention_path: Path | None
    width: int
    height: int
    format: str
    device: str
    timings: Mapping[str, float]
    credentials: CredentialsState | None = None  # None: no stamp was asked for (refsr sr without one)
    credentials_note: str | None = None  # why an asked-for carrier is missing
    restoration: Mapping[str, float | int] | None = None  # Restoration.facts() when restored from an original


def _provenance_stamp(stamp: StampRequest, target: tuple[Path, str | None, np.ndarray],
                      sources: list[tuple[Path, str | None, np.ndarray]], image: np.ndarray) -> ProvenanceStamp:
    # Ingredients (hash + thumbnail) and the output's thumbnail only go into a signed manifest.
    signing = stamp.identity is not None
    return ProvenanceStamp(stamp, ingredients_for(stamp.provenance, target, sources) if signing else (),
                           thumbnail_jpeg(image) if signing else b"")


@dataclass(frozen=True)
class _Made:
    image: np.ndarray
    maps: AttentionMaps | None  # None: the model did not run (the original covers the whole output)
    restoration: Restoration | None


def _make(model: TTSR, lr: np.ndarray, refs: Sequence[np.ndarray], params: EnhanceParams, restore: bool,
          timings: dict[str, float], **model_kw: Any) -> _Made:
    """The output's pixels: restored from the original (refs[0]) where it reaches, the model's elsewhere."""
    restoration = None
    if restore:
        t0 = time.perf_counter()
        restoration = restore_from_original(lr, refs[0], params.outscale)
        timings["restore_s"] = time.perf_counter() - t0
    if restoration is not None and restoration.covered >= 1.0:
        return _Made(np.rint(restoration.image).astype(np.uint8), None, restoration)
    t0 = time.perf_counter()
    arrays = enhance_arrays(model, lr, refs, params, **model_kw)
    if model_kw["device"].type == "cuda":
        torch.cuda.synchronize(model_kw["device"])
    timings["sr_s"] = time.perf_counter() - t0
    maps = AttentionMaps(arrays.soft_attention, arrays.hard_attention, arrays.ref_grids)
    if restoration is None:
        return _Made(arrays.image, maps, None)
    return _Made(composite(restoration.image, restoration.inside, arrays.image), maps, restoration)


def _restored_stamp(stamp: StampRequest | None, restoration: Restoration | None) -> StampRequest | None:
    """The stamp with the restoration's facts: the original is the first reference."""
    if stamp is None or restoration is None:
        return stamp
    first = stamp.provenance.references[0]
    restored = RestoredFrom(first.sha256, restoration.fidelity_db, restoration.covered, first.name)
    return replace(stamp, provenance=replace(stamp.provenance, restored_from=restored))


def enhance_photo(
    model: TTSR,
    target_path: PathLike,
    ref_paths: Sequence[PathLike],
    output_path: PathLike,
    params: EnhanceParams = EnhanceParams(),
    *,
    attention_path: PathLike | None = None,
    device: str | torch.device | None = "cpu",
    protected: Collection[PathLike] = (),
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    reference_cache: ReferenceCache | None = None,
    stamp: StampRequest | None = None,
    sha256: Sequence[str] | None = None,
    restore: bool = False,
) -> EnhanceResult:
    """Enhance the photo at `target_path` with the references at `ref_paths` (best first; none: from itself).

    Loads everything EXIF-oriented, runs TTSR ×4 (tiled when large), resizes to
    `params.outscale`, and writes `output_path` atomically with the target's EXIF (orientation
    reset to 1) and ICC profile. The format follows `output_path`'s extension unless
    `params.output_format` is set. Refuses to write over the target, a reference or anything in
    `protected`. The attention maps go to `attention_path` when
    given (see `pipeline.attention`). With a `stamp`, the output carries its provenance (XMP and/or a
    signed C2PA manifest, `pipeline.provenance.stamp`); a format that cannot carry it is written without, and the
    result's `credentials` says so. Raises images.UnreadableImageError for undecodable inputs.
    `sha256` (the target's, then each reference's): the pixels used must be those bytes, else
    hashed_read.PhotoChangedError before any work (the record will name these hashes). `restore`: the
    target is a copy of the first reference, its original; the output is the original aligned into
    the target's enlarged frame (pipeline.matching.restore) where it reaches and the model's output elsewhere
    (the model runs only when some of the frame is left), unless the pixels show no copy (logged).
    """
    if sha256 is not None and len(sha256) != 1 + len(ref_paths):
        raise ValueError(f"sha256 needs the target's and each reference's hash, got {len(sha256)} "
                         f"for {1 + len(ref_paths)} photos")
    hashes = list(sha256) if sha256 is not None else [None] * (1 + len(ref_paths))
    dev = resolve_device(device)
    out = Path(output_path)
    guarded = [Path(target_path), *map(Path, ref_paths), *map(Path, protected)]
    if attention_path is not None:
        # Checked before any work: the attention archive must never replace an input or the output.
        for other in [*guarded, out]:
            if images.same_file(Path(attention_path), other):
                raise ValueError(f"refusing to write the attention maps over {str(other)!r}; give another path")
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    lr, meta = load_verified(target_path, hashes[0], max_pixels=max_pixels)
    loaded = [load_verified(p, h, max_pixels=max_pixels) for p, h in zip(ref_paths, hashes[1:])]
    refs = [rgb for rgb, _ in loaded]
    timings["load_s"] = time.perf_counter() - t0

    made = _make(model, lr, refs, params, restore, timings, device=dev, reference_cache=reference_cache)
    stamp = _restored_stamp(stamp, made.restoration)

    t0 = time.perf_counter()
    fmt = params.output_format or Image.registered_extensions().get(out.suffix.lower()) or "PNG"
    fmt = WRITE_FALLBACK.get(fmt, fmt)
    sources = [(Path(p), m.format, rgb) for p, (rgb, m) in zip(ref_paths, loaded)]
    stamped = None if stamp is None else _provenance_stamp(stamp, (Path(target_path), meta.format, lr), sources,
                                                         made.image)
    written = images.save_atomic(out, made.image, meta, format=fmt, quality=params.quality, protected=guarded,
                                 stamp=stamped)
    attention = None
    if attention_path is not None and made.maps is not None:
        attention = save_attention(attention_path, made.maps)
    digest = sha256_file(written)
    timings["save_s"] = time.perf_counter() - t0
    height, width = made.image.shape[:2]
    how = "restored from its original" if made.restoration is not None else "enhanced"
    logger.info("%s %s → %s (%dx%d, %.2fs)", how, target_path, written, width, height,
                timings.get("sr_s", 0.0) + timings.get("restore_s", 0.0))
    return EnhanceResult(
        output_path=written, output_sha256=digest, attention_path=attention, width=width, height=height, format=fmt,
        device=str(dev), timings=timings, credentials=stamped.state if stamped is not None else None,
        credentials_note=stamped.note if stamped is not None else None,
        restoration=made.restoration.facts() if made.restoration is not None else None,
    )
