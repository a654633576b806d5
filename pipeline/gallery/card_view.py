"""One card's derived images (heat overlay, 1:1 crops, bicubic thumbnail) and the measures shown with them.

Everything a card generates lives in ``assets/cards/<digest>/`` beside a ``meta.json`` that says what
was made and what could not be; the digest covers every source's signature, the attention and the
settings, so an unchanged card is read back instead of rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.attention import AttentionMaps, load_attention, reference_point
from pipeline.gallery.assets import Assets, Picture, Sources, digest, file_signature
from pipeline.gallery.cards import GalleryCard, GallerySettings
from pipeline.gallery.heat import heat_layer, heat_overlay, peak_region, transfer_weight
from pipeline.gallery.matches import save_matches
from pipeline.images import UnreadableImageError, read_header, save_atomic, shrink
from pipeline.vocabulary import EnhancementStatus
from ttsr_core.arrays import resize_bicubic
from ttsr_core.config import SCALE
from durable.files import atomic_write
from ttsr_core.metrics import DetailGain, detail_gain

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (left, top, right, bottom) in output pixels
_CARD_VERSION = "matches-v1"  # what a card generates: a new item rebuilds the cached cards once


@dataclass(frozen=True)
class Crop:
    label: str
    picture: Picture
    note: str = ""


@dataclass(frozen=True)
class HeatView:
    """Soft attention laid over the output: both pictures at one size, shown at the output's size."""

    base: Picture  # the output (shrunk to GallerySettings.heat_side at most)
    layer: Picture  # the heat colours, alpha growing with attention, the crop box drawn on it
    width: int  # the output's own size, which the page shows them at
    height: int
    low: float  # the map's own range, which the colours span
    high: float


@dataclass(frozen=True)
class CardView:
    """A card with everything the page needs of its generated images."""

    card: GalleryCard
    index: int
    target_thumb: Picture | None
    bicubic_thumb: Picture | None
    enhanced_thumb: Picture | None
    ref_thumbs: tuple[Picture | None, ...]
    heat: Picture | None
    heat_range: tuple[float, float] | None
    heat_view: HeatView | None
    crops: tuple[Crop, ...]
    gain: DetailGain | None
    sizes: dict[str, str]
    notes: tuple[str, ...]
    matches: Picture | None = None  # the target and its first reference, the inlier matches drawn
    match_counts: tuple[int, int] | None = None  # (inliers, matches) as verification counts them


def _attention_of(card: GalleryCard) -> tuple[AttentionMaps | None, str, str]:
    """(maps, cache signature, note) for the card's attention, never raising for a bad file."""
    att = card.attention
    if att is None:
        return None, "none", "no soft-attention map was saved for this run: crops are centred"
    if isinstance(att, AttentionMaps):
        arrays = hashlib.sha256(
            att.soft.tobytes() + (b"" if att.hard is None else att.hard.tobytes())
        ).hexdigest()
        return att, f"array:{att.soft.shape}:{arrays}:{att.ref_grids}", ""
    try:
        signature = file_signature(att)
        return load_attention(att), signature, ""
    except FileNotFoundError:
        reason = "file not found"
    except (OSError, ValueError, EOFError) as exc:  # np.load raises all three for damaged files
        reason = f"{type(exc).__name__}: {exc}"
    logger.warning("gallery: attention map %s unusable: %s", att, reason)
    return None, "unusable", f"attention map unusable ({reason}): crops are centred"


def _box(cy: float, cx: float, side: int, height: int, width: int) -> Box:
    """(left, top, right, bottom) of a side×side box centred near (cy, cx), inside the image."""
    sy, sx = min(side, height), min(side, width)
    top = int(min(max(round(cy - sy / 2), 0), height - sy))
    left = int(min(max(round(cx - sx / 2), 0), width - sx))
    return left, top, left + sx, top + sy


def _save_heat(lr: np.ndarray, maps: AttentionMaps, box: Box, out_hw: tuple[int, int], card_dir: Path,
               settings: GallerySettings) -> dict[str, Any]:
    """The heat overlay on the target's thumbnail, with the crop box drawn on it; its meta entry."""
    thumb = shrink(lr, settings.thumb_side)
    blended, lo, hi = heat_overlay(thumb, maps.soft, settings.heat_alpha)
    image = Image.fromarray(blended)
    left, top, right, bottom = box
    sy, sx = thumb.shape[0] / out_hw[0], thumb.shape[1] / out_hw[1]
    ImageDraw.Draw(image).rectangle(
        (left * sx, top * sy, max(left * sx + 2, right * sx - 1), max(top * sy + 2, bottom * sy - 1)),
        outline=(80, 220, 255),
        width=max(1, round(thumb.shape[1] / 160)),
    )
    save_atomic(card_dir / "heat.png", np.asarray(image))
    return {"file": "heat.png", "min": lo, "max": hi}


def _save_heat_view(enhanced: np.ndarray, maps: AttentionMaps, box: Box, card_dir: Path,
                    settings: GallerySettings) -> dict[str, Any]:
    """The output and a heat layer of the same size to lay over it, the crop box drawn; their meta entry."""
    base = shrink(enhanced, settings.heat_side)
    h, w = base.shape[:2]
    rgba, lo, hi = heat_layer(maps.soft, w, h)
    layer = Image.fromarray(rgba, mode="RGBA")
    left, top, right, bottom = box
    sy, sx = h / enhanced.shape[0], w / enhanced.shape[1]
    ImageDraw.Draw(layer).rectangle(
        (left * sx, top * sy, max(left * sx + 2, right * sx - 1), max(top * sy + 2, bottom * sy - 1)),
        outline=(80, 220, 255, 255), width=max(1, round(w / 320)),
    )
    save_atomic(card_dir / "heat-base.jpg", base, format="JPEG", quality=settings.thumb_quality)
    atomic_write(card_dir / "heat-layer.png", lambda tmp: layer.save(tmp, format="PNG"))  # RGBA: not save_atomic
    return {"base": "heat-base.jpg", "layer": "heat-layer.png", "width": int(enhanced.shape[1]),
            "height": int(enhanced.shape[0]), "min": lo, "max": hi}


def _save_output_crops(lr: np.ndarray, bicubic: np.ndarray, enhanced: np.ndarray, box: Box,
                       card_dir: Path) -> list[dict[str, str]]:
    """1:1 crops of the input (nearest), the bicubic upscale and the output inside ``box``."""
    left, top, right, bottom = box
    out_h, out_w = enhanced.shape[:2]
    # LR pixels as the model saw them, nearest-neighbour so each input pixel stays a visible block.
    ry, rx = lr.shape[0] / out_h, lr.shape[1] / out_w
    lr_crop = Image.fromarray(lr).resize(
        (right - left, bottom - top), Image.Resampling.NEAREST, box=(left * rx, top * ry, right * rx, bottom * ry)
    )
    crops = []
    for name, label, pixels in (
        ("crop-lr.png", "input (nearest)", np.asarray(lr_crop)),
        ("crop-bicubic.png", "bicubic", bicubic[top:bottom, left:right]),
        ("crop-enhanced.png", "enhanced", enhanced[top:bottom, left:right]),
    ):
        save_atomic(card_dir / name, np.ascontiguousarray(pixels))
        crops.append({"file": name, "label": label, "note": ""})
    return crops


def _save_reference_crop(card: GalleryCard, sources: Sources, maps: AttentionMaps, peak: tuple[int, int],
                         card_dir: Path, crop: int) -> dict[str, str] | str:
    """The reference region the hard attention picked at ``peak``, at the model's scale; or why there is none."""
    ref_arrays = [sources.get(ref.path) for ref in card.references]
    point = reference_point(maps, peak, [None if a is None else a.shape[:2] for a in ref_arrays])
    if isinstance(point, str):
        return point
    k, ry, rx, scale = point
    ref = ref_arrays[k]
    assert ref is not None  # reference_point only locates readable references
    side = max(1, round(crop * scale))
    rl, rt, rr, rb = _box(ry, rx, side, ref.shape[0], ref.shape[1])
    pixels = ref[rt:rb, rl:rr]
    if scale != 1.0:
        pixels = resize_bicubic(
            np.ascontiguousarray(pixels), max(1, round((rr - rl) / scale)), max(1, round((rb - rt) / scale))
        )
    save_atomic(card_dir / "crop-reference.png", np.ascontiguousarray(pixels))
    label = f"reference {k + 1}" if len(card.references) > 1 else "reference"
    return {"file": "crop-reference.png", "label": label,
            "note": f"at ({round(rx)}, {round(ry)}) in {card.references[k].label}"}


def _build_card_assets(
    card: GalleryCard, sources: Sources, maps: AttentionMaps | None, card_dir: Path, settings: GallerySettings
) -> dict[str, Any]:
    """Generate heat overlay, crops, bicubic thumbnail and the gain for one card; return its meta."""
    meta: dict[str, Any] = {"crops": [], "notes": []}
    lr = sources.get(card.target_path)
    enhanced = sources.get(card.enhanced_path)
    if lr is None:
        return meta
    crop = settings.crop_side
    out_h, out_w = enhanced.shape[:2] if enhanced is not None else (lr.shape[0] * SCALE, lr.shape[1] * SCALE)
    bicubic = resize_bicubic(lr, out_w, out_h) if enhanced is not None else None
    peak: tuple[int, int] | None = None
    if maps is not None:
        ah, aw = maps.soft.shape
        # Crops go where transferred texture shows (attention and added detail), not where matching
        # was merely easy; without the output, where attention is highest.
        weight = maps.soft if enhanced is None else transfer_weight(maps.soft, enhanced, bicubic)
        # The box peak_region averages over covers about one crop of the output.
        peak = peak_region(weight, max(1, round(crop * ah / out_h)))
        cy, cx = (peak[0] + 0.5) * out_h / ah, (peak[1] + 0.5) * out_w / aw
        meta["peak"] = {"row": peak[0], "col": peak[1], "value": float(maps.soft[peak]), "grid": [ah, aw]}
    else:
        cy, cx = out_h / 2, out_w / 2
    box = _box(cy, cx, crop, out_h, out_w)
    meta["box"] = list(box)
    reference = sources.get(card.references[0].path) if card.references else None
    if reference is not None:
        meta["matches"] = save_matches(lr, reference, card_dir, settings.thumb_quality)
    if maps is not None:
        meta["heat"] = _save_heat(lr, maps, box, (out_h, out_w), card_dir, settings)
    if enhanced is None or bicubic is None:
        return meta
    if maps is not None:
        meta["heat_view"] = _save_heat_view(enhanced, maps, box, card_dir, settings)
    meta["gain"] = dataclasses.asdict(detail_gain(lr, enhanced, bicubic))
    save_atomic(card_dir / "bicubic-thumb.jpg", shrink(bicubic, settings.thumb_side), format="JPEG",
                quality=settings.thumb_quality)
    meta["bicubic_thumb"] = "bicubic-thumb.jpg"
    meta["crops"] = _save_output_crops(lr, bicubic, enhanced, box, card_dir)
    if maps is not None and peak is not None and card.references:
        found = _save_reference_crop(card, sources, maps, peak, card_dir, crop)
        if isinstance(found, str):
            meta["notes"].append(f"no reference crop: {found}")
        else:
            meta["crops"].append(found)
    return meta


def _sizes(card: GalleryCard, sources: Sources) -> dict[str, str]:
    """"W×H" of the target and the output, from pixels already decoded or else from the header."""
    sizes = {}
    for what, path in (("target", card.target_path), ("enhanced", card.enhanced_path)):
        rgb = sources.peek(path)
        if rgb is not None:
            sizes[what] = f"{rgb.shape[1]}×{rgb.shape[0]}"
        elif path is not None:
            try:
                header = read_header(path)
                sizes[what] = f"{header.width}×{header.height}"
            except (OSError, UnreadableImageError):
                pass
    return sizes


def _card_meta(card: GalleryCard, sources: Sources, maps: AttentionMaps | None, att_signature: str,
               assets: Assets) -> tuple[Path, dict[str, Any]]:
    """The card's folder and meta: read back when its sources are unchanged, else built and written."""
    signatures: list[str] = []
    for path in (card.target_path, card.enhanced_path, *(ref.path for ref in card.references)):
        try:
            signatures.append(file_signature(path) if path else "-")
        except OSError:
            signatures.append(f"missing:{path}")
    card_dir = assets.root / "cards" / digest("card", _CARD_VERSION, att_signature, assets.settings, *signatures)
    assets.used.add(card_dir)
    meta_path = card_dir / "meta.json"
    if meta_path.is_file():
        try:
            return card_dir, json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    card_dir.mkdir(parents=True, exist_ok=True)
    meta = _build_card_assets(card, sources, maps, card_dir, assets.settings)
    meta["sizes"] = _sizes(card, sources)
    # Problems are part of what the page says, so they are cached with the images.
    meta["problems"] = {str(p): why for p, why in sources.problems.items()}
    text = json.dumps(meta, ensure_ascii=False, sort_keys=True)
    atomic_write(meta_path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))
    return card_dir, meta


def prepare_card(card: GalleryCard, index: int, assets: Assets) -> CardView:
    """Thumbnails, derived images and notes of one card (generated now, or found in the cache)."""
    sources = Sources()
    notes: list[str] = []
    maps, att_signature, att_note = _attention_of(card)
    if card.attention is None and card.restored:
        att_note = "restored from its original, which covers the whole output: the model did not run, crops are centred"
    if att_note and card.status is EnhancementStatus.succeeded:
        notes.append(att_note)

    target_thumb = assets.thumb(card.target_path, sources) if card.target_path else None
    enhanced_thumb = assets.thumb(card.enhanced_path, sources) if card.enhanced_path else None
    ref_thumbs = tuple(assets.thumb(ref.path, sources) if ref.path else None for ref in card.references)
    card_dir, meta = _card_meta(card, sources, maps, att_signature, assets)

    problems: dict[str, str] = dict(meta.get("problems", {}))
    problems.update({str(p): why for p, why in sources.problems.items()})
    labelled = [("input", card.target_path), ("enhanced output", card.enhanced_path)]
    labelled += [(f"reference {ref.label}", ref.path) for ref in card.references]
    for label, path in labelled:
        if path is not None and str(path) in problems:
            notes.append(f"{label}: {problems[str(path)]}")
    notes.extend(str(n) for n in meta.get("notes", []))

    def pic(name: object) -> Picture | None:
        if not isinstance(name, str) or not (card_dir / name).is_file():
            return None
        return assets.picture(card_dir / name)

    heat_meta = meta.get("heat")
    heat = pic(heat_meta.get("file")) if isinstance(heat_meta, dict) else None
    crops = []
    for entry in meta.get("crops", []):
        picture = pic(entry.get("file"))
        if picture is not None:
            crops.append(Crop(str(entry.get("label", "")), picture, str(entry.get("note", ""))))
    gain_meta = meta.get("gain")
    hv = meta.get("heat_view")
    heat_view = None
    if isinstance(hv, dict) and (base := pic(hv.get("base"))) and (layer := pic(hv.get("layer"))):
        heat_view = HeatView(base, layer, int(hv["width"]), int(hv["height"]), float(hv["min"]), float(hv["max"]))
    found = meta.get("matches")
    matches = pic(found.get("file")) if isinstance(found, dict) else None
    return CardView(
        card=card,
        index=index,
        target_thumb=target_thumb,
        bicubic_thumb=pic(meta.get("bicubic_thumb")),
        enhanced_thumb=enhanced_thumb,
        ref_thumbs=ref_thumbs,
        heat=heat,
        heat_range=(heat_meta["min"], heat_meta["max"]) if heat is not None and isinstance(heat_meta, dict) else None,
        heat_view=heat_view,
        crops=tuple(crops),
        gain=DetailGain(**gain_meta) if isinstance(gain_meta, dict) else None,
        sizes=dict(meta.get("sizes", {})),
        notes=tuple(notes),
        matches=matches,
        match_counts=(int(found["inliers"]), int(found["matches"])) if matches is not None else None,
    )
