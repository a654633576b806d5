"""The gallery's HTML: one self-contained page, cards escaped, inline style and script pinned by hash."""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from pipeline.gallery.assets import Picture
from pipeline.gallery.card_view import CardView
from pipeline.gallery.cards import GalleryCard
from pipeline.vocabulary import EnhancementStatus

_ERROR_CHARS = 4000  # a traceback longer than this is cut: the database keeps the whole text
# The stylesheet and script ship as package data (pipeline/gallery/static) and are inlined: the page
# works from a file: URL with no server. Each starts on a new line after its opening tag.
_CSS = "\n" + resources.files("pipeline.gallery").joinpath("static/gallery.css").read_text(encoding="utf-8")
_JS = "\n" + resources.files("pipeline.gallery").joinpath("static/gallery.js").read_text(encoding="utf-8")


def _e(text: object) -> str:
    """HTML-escape anything that may come from the album (names, paths, errors), quotes included."""
    return html.escape(str(text), quote=True)


def file_href(path: Path, out_dir: Path) -> str:
    """A link from the gallery folder to ``path``: relative and percent-encoded, file: URI across drives.

    The result still needs HTML-escaping (`_e`) when put into an attribute.
    """
    path = Path(os.path.abspath(path))
    try:
        rel = Path(os.path.relpath(path, out_dir)).as_posix()
    except ValueError:  # Windows: another drive has no relative path
        return path.as_uri()
    # Every character outside the unreserved set is encoded, so "#", "?" and "%" in album names
    # stay part of the path; "/" separates segments.
    return quote(rel, safe="/")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_timing(name: str, seconds: float) -> tuple[str, str]:
    label = name[:-2] if name.endswith("_s") else name
    return label.replace("_", " "), f"{seconds:.2f} s" if name.endswith("_s") else f"{seconds:g}"


def _figure(
    label: str, picture: Picture | None, link: Path | None, out_dir: Path, alt: str, extra: str = ""
) -> str:
    caption = f"<figcaption>{_e(label)}{(' · ' + _e(extra)) if extra else ''}</figcaption>"
    if picture is None:
        body = f'<div class="missing" role="img" aria-label="{_e(alt)}">{_e(label)}: not available</div>'
    else:
        body = (
            f'<img src="{_e(quote(picture.rel, safe="/"))}" '
            f'width="{picture.width}" height="{picture.height}" '
            f'loading="lazy" decoding="async" alt="{_e(alt)}">'
        )
    if link is not None and picture is not None:
        body = f'<a href="{_e(file_href(link, out_dir))}" title="open full resolution">{body}</a>'
    return f"<figure>{body}{caption}</figure>"


def _headline(view: CardView) -> tuple[float | None, float | None]:
    """(relevance of the best reference, detail gain in dB): what a card is sorted by."""
    best = view.card.references[0] if view.card.references else None
    return (best.relevance if best is not None else None), (view.gain.detail_db if view.gain is not None else None)


def _card_header(view: CardView, total: int, problem: bool) -> str:
    """Number, title, status badge, the two headline scores and the previous/next links."""
    card = view.card
    relevance, gain = _headline(view)
    prev_link = (
        f'<a class="prev" href="#card-{view.index - 1}">← previous</a>'
        if view.index > 0
        else '<a class="prev" hidden></a>'
    )
    next_link = (
        f'<a class="next" href="#card-{view.index + 1}">next →</a>'
        if view.index + 1 < total
        else '<a class="next" hidden></a>'
    )
    failed = card.status is EnhancementStatus.failed
    badge = "failed" if failed else ("output missing" if problem else "succeeded")
    badge_class = "bad" if problem else "ok"
    return (
        f'<header><span class="num">{view.index + 1}</span><h2 title="{_e(card.title)}">{_e(card.title)}</h2>'
        f'<span class="badge {badge_class}">{_e(badge)}</span>'
        f'<span class="chips">relevance {_e(_fmt(relevance))} · '
        f"gain {_e('–' if gain is None else f'{gain:+.2f} dB')}</span>"
        f'<nav class="flip">{prev_link} {next_link}</nav></header>'
    )


def _card_panels(view: CardView, out_dir: Path) -> str:
    """Thumbnails side by side: input, bicubic, output, the references and the heat overlay."""
    card, sizes = view.card, view.sizes
    figures = [_figure("input", view.target_thumb, card.target_path, out_dir, f"input {card.title}",
                       sizes.get("target", ""))]
    if card.status is EnhancementStatus.succeeded:
        figures.append(_figure("bicubic ×4", view.bicubic_thumb, card.bicubic_path, out_dir,
                               f"bicubic upscale of {card.title}"))
        figures.append(_figure("enhanced", view.enhanced_thumb, card.enhanced_path, out_dir,
                               f"enhanced {card.title}", sizes.get("enhanced", "")))
    for ref, thumb in zip(card.references, view.ref_thumbs, strict=True):
        label = f"reference {ref.rank + 1}" if len(card.references) > 1 else "reference"
        figures.append(_figure(label, thumb, ref.path, out_dir, f"{label} {ref.label}", ref.label))
    if view.heat_view is None and view.heat is not None and view.heat_range is not None:
        lo, hi = view.heat_range
        figures.append(_figure("soft attention", view.heat, None, out_dir, f"soft attention over {card.title}",
                               f"{lo:.2f}–{hi:.2f}"))
    return f'<div class="panels">{"".join(figures)}</div>'


def _card_heat(view: CardView, opacity: float) -> str:
    """Soft attention over the output at the output's size, with a slider for the layer's opacity."""
    hv = view.heat_view
    if hv is None:
        return ""
    slider_id = f"heat-{view.index}"

    def img(picture: Picture, cls: str, alt: str) -> str:
        return (f'<img class="{cls}" src="{_e(quote(picture.rel, safe="/"))}" width="{hv.width}" '
                f'height="{hv.height}" loading="lazy" decoding="async" alt="{_e(alt)}">')

    percent = round(100 * opacity)
    # The slider needs the script (hidden until it runs); without it the layer keeps the stylesheet's opacity.
    return (
        f'<section class="heat-box"><h3>soft attention over the output · {hv.low:.2f}–{hv.high:.2f} '
        f'(yellow = the best reference patch matched well, dark = little to copy; the box is the crops\' region)'
        f' <label for="{slider_id}" hidden>heat opacity</label><input type="range" id="{slider_id}" '
        f'class="heat-opacity" min="0" max="100" value="{percent}" hidden></h3>'
        f'<div class="heat-stack">{img(hv.base, "heat-base", f"enhanced {view.card.title}")}'
        f'{img(hv.layer, "heat-layer", f"soft attention over {view.card.title}")}</div></section>'
    )


def _card_params(card: GalleryCard) -> str:
    if not card.params:
        return ""
    return f'<details class="params"><summary>parameters</summary><pre>{_e(card.params)}</pre></details>'


def _card_crops(view: CardView) -> str:
    """The 1:1 crops where attention and added detail peak, with a CSS-only ×2 zoom."""
    if not view.crops:
        return ""
    zoom_id = f"zoom-{view.index}"
    crop_figs = "".join(
        f'<figure><img src="{_e(quote(c.picture.rel, safe="/"))}" '
        f'width="{c.picture.width}" height="{c.picture.height}" '
        f'loading="lazy" decoding="async" alt="{_e(c.label)} crop">'
        f"<figcaption>{_e(c.label)}{(' · ' + _e(c.note)) if c.note else ''}</figcaption></figure>"
        for c in view.crops
    )
    return (
        f'<section class="crops-box"><input type="checkbox" class="zoom-toggle" id="{zoom_id}">'
        f'<h3>1:1 crops where transferred texture shows <label for="{zoom_id}">zoom ×2</label></h3>'
        f'<div class="crops">{crop_figs}</div></section>'
    )


def _card_matches(view: CardView) -> str:
    """The target beside its first reference with the feature matches one homography explains."""
    if view.matches is None or view.match_counts is None or not view.card.references:
        return ""
    inliers, matches = view.match_counts
    m = view.matches
    return (
        f'<section class="matches-box"><h3>matched features: {inliers} of {matches} matches agree on one '
        f"homography with {_e(view.card.references[0].label)}</h3>"
        f'<img src="{_e(quote(m.rel, safe="/"))}" width="{m.width}" height="{m.height}" loading="lazy" '
        f'decoding="async" alt="target and reference side by side, inlier matches drawn"></section>'
    )


def _card_scores(view: CardView) -> str:
    """Label/value rows: per-reference scores, the detail gain, the model, timings and details."""
    card = view.card
    rows: list[tuple[str, str]] = []
    if not card.references and card.status is EnhancementStatus.succeeded:
        rows.append(("reference", "none lent texture (not verified, relevance under --min-relevance): "
                                  "enhanced from the photo alone"))
    for ref in card.references:
        prefix = f"ref {ref.rank + 1} " if len(card.references) > 1 else ""
        rows.append((f"{prefix}cosine", _fmt(ref.cosine)))
        rows.append((f"{prefix}relevance", _fmt(ref.relevance)))
        if ref.inliers is not None:
            rows.append((f"{prefix}inliers", str(ref.inliers)))
    if view.gain is not None:
        rows.append(("detail gain", f"{view.gain.detail_db:+.2f} dB"))
        rows.append(
            ("LR fidelity", f"{view.gain.lr_psnr_db:.1f} dB, bicubic {view.gain.bicubic_lr_psnr_db:.1f} dB "
                            "(higher = the output, scaled back down, is closer to the input)")
        )
    if card.model:
        rows.append(("model", card.model))
    rows.extend(_fmt_timing(k, v) for k, v in card.timings)
    rows.extend(card.details)
    return "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in rows)


def _card_error(card: GalleryCard) -> str:
    """The error, first line as the summary, the text cut at _ERROR_CHARS."""
    if not card.error:
        return ""
    text = (
        card.error
        if len(card.error) <= _ERROR_CHARS
        else card.error[:_ERROR_CHARS] + "\n… (cut; the database keeps the full text)"
    )
    first = card.error.strip().splitlines()[0] if card.error.strip() else card.error
    return f'<details class="error" open><summary>{_e(first[:200])}</summary><pre>{_e(text)}</pre></details>'


def _card_html(view: CardView, out_dir: Path, total: int, heat_opacity: float = 0.6) -> str:
    card = view.card
    failed = card.status is EnhancementStatus.failed
    problem = failed or view.enhanced_thumb is None
    status_rank = 0 if failed else (1 if problem else 2)
    relevance, gain = _headline(view)
    # What the script sorts and filters by.
    data = (
        f'data-order="{view.index}" data-status="{card.status.value}" data-rank="{status_rank}" '
        f'data-relevance="{"" if relevance is None else repr(float(relevance))}" '
        f'data-gain="{"" if gain is None else repr(gain)}"'
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in view.notes)
    return (
        f'<article class="card{" problem" if problem else ""}" id="card-{view.index}" tabindex="-1" {data}>'
        f"{_card_header(view, total, problem)}{_card_error(card)}{_card_panels(view, out_dir)}"
        f'{_card_heat(view, heat_opacity)}{_card_crops(view)}{_card_matches(view)}<dl class="scores">{_card_scores(view)}</dl>'
        f"{_card_params(card)}{f'<ul class=notes>{notes}</ul>' if notes else ''}</article>"
    )


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def page(
    views: Sequence[CardView],
    out_dir: Path,
    title: str,
    summary: Sequence[tuple[str, str]],
    generated: datetime,
    heat_opacity: float = 0.6,
) -> str:
    """The whole index.html for the prepared cards, in their order; `heat_opacity` starts each heat slider."""
    total = len(views)
    failed = sum(1 for v in views if v.card.status is EnhancementStatus.failed)
    cards_html = (
        "\n".join(_card_html(v, out_dir, total, heat_opacity) for v in views)
        or '<p class="empty">No enhancements to show.</p>'
    )
    meta = [*summary, ("cards", str(total)), ("failed", str(failed))]
    meta_html = "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in meta)
    # Hash-pinned inline code only: no network source is allowed, and text injected through an
    # album name could not run even if escaping were ever missed.
    csp = (
        f"default-src 'none'; img-src 'self' file: data:; style-src {_csp_hash(_CSS)}; "
        f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">
<meta name="referrer" content="no-referrer">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{_e(title)}</h1><p class="meta">{meta_html}</p></header>
<div id="controls" hidden>
<label for="sort-by">sort</label>
<select id="sort-by"><option value="recorded">as listed</option>
<option value="failures">failures first</option>
<option value="relevance">relevance, highest first</option>
<option value="gain">detail gain, highest first</option>
<option value="name">name</option></select>
<label for="show">show</label>
<select id="show"><option value="all">all</option><option value="problem">failures only</option>
<option value="ok">succeeded only</option></select>
<label for="search">name contains</label><input id="search" type="search" autocomplete="off">
<span id="shown"></span>
<span class="hint">← / → flip cards · click a picture for full resolution</span>
</div>
<noscript><p class="meta">Sorting, filtering and arrow-key flipping need JavaScript;
everything else works without it.</p></noscript>
<main id="cards">
{cards_html}
</main>
<footer>
<p><b>How to read a card.</b> <i>input</i> is the low-resolution photo, <i>bicubic ×4</i> a plain
upscale of it, <i>enhanced</i> the texture transformer's output, <i>reference</i> the high-resolution
photo it took texture from. The crops are 1:1 pixels of the output, centred where the model's soft
attention (how well the best reference patch matched) is highest; the reference crop shows the region
the hard attention picked there. <i>cosine</i> is the retrieval similarity of the two photos'
embeddings, <i>relevance</i> the model's own texture matching score. There is no ground truth in an
album, so <i>detail gain</i> is a no-reference proxy: 10·log10 of the high-frequency (Laplacian)
energy of the output over that of the bicubic upscale; positive means more fine detail than bicubic,
which real texture gives but so would noise or artefacts. <i>LR fidelity</i> is the PSNR of the output
scaled back down to the input's size against the input, in dB: higher is better, meaning the output
departs less from what was photographed; bicubic's own figure is beside it for scale.
The heat layer over the output is the soft attention: how well the best reference patch matched at
each place (its colours span this card's own range; the slider sets its opacity). The parameters
the enhancement ran with are folded under <i>parameters</i>.</p>
<p>Generated {_e(generated.strftime("%Y-%m-%d %H:%M UTC"))} by refsr-album. Full-resolution images
are linked, not copied: keep this folder where it is relative to the album, or links break.</p>
</footer>
<script>{_JS}</script>
</body>
</html>
"""
