"""`refsr report`: turn a run's or an album's enhancement records into the static HTML gallery."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import queries
from db.engine import sqlite_file
from db.models import Album, Enhancement, EnhancementStatus, Photo, Run
from pipeline.gallery.assets import ASSETS_DIR, ensure_bicubic
from pipeline.gallery.cards import GalleryCard, GalleryReference, GallerySettings
from pipeline.gallery.render import render_gallery
from pipeline.images import UnreadableImageError, read_header

logger = logging.getLogger(__name__)

GALLERY_FOLDER = "galleries"

REPORT_DESCRIPTION = """\
Write a static HTML gallery of enhancement results and print the path of its index.html.

One card per target photo shows the low-resolution input, a plain bicubic x4 upscale, the
enhanced output and the reference photo(s) that lent their texture, side by side; 1:1 crops of
all of them where transferred texture shows: high soft attention where the output also added
detail over bicubic (the reference crop is the region the model copied texture from there);
the soft-attention map as a heat layer over the output, at the output's size, with an opacity
slider; and the scores: retrieval cosine, the model's texture relevance, a no-reference detail
gain against bicubic, LR fidelity (higher = the output scaled back down is closer to the input),
the model and the timings; the target beside its first reference with the feature matches that one
homography explains drawn (geometric verification's inliers), and, for a copy given its original
back, which original and how much of the output it covers. The parameters each enhancement ran with
are folded away on its card.

The page needs no server and no network: open index.html in any browser. Thumbnails and
crops are generated once into the gallery folder and reused; full-resolution photos are
linked where they are, not copied. Sorting (relevance, gain, failures first), filtering and
flipping cards with the left/right arrow keys use a little inline JavaScript; without it the
page still shows everything.
"""

REPORT_EPILOG = """\
examples:
  refsr report                           the last run that enhanced photos
  refsr report examples/album            newest attempt of every target in the album
  refsr report --run 12                  exactly what run 12 did (see `refsr history`)
  refsr report examples/album --out /tmp/g   write the gallery somewhere else

Without --out the gallery goes to <folder of the SQLite database>/galleries/album-<id> or
run-<id> (with a server database: $REFSR_HOME/galleries/<database>/...); re-running the command refreshes it and only makes images for what changed.
"""


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``refsr report`` on an ``add_subparsers()`` object; returns the new parser.

    The parser's defaults carry ``handler=report_command``: call ``args.handler(args, session)``.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write an HTML before/after gallery of a run or an album",
        description=REPORT_DESCRIPTION,
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "album",
        nargs="?",
        metavar="ALBUM",
        help="album folder: show the newest enhancement of each of its target photos",
    )
    parser.add_argument(
        "--run",
        dest="run_id",
        type=int,
        metavar="RUN_ID",
        help="show every enhancement recorded by this run instead (ids: `refsr history`)",
    )
    parser.add_argument(
        "--out",
        dest="gallery_dir",  # not the enhance output folder (Settings.out_dir), which report never reads
        type=Path,
        metavar="DIR",
        help="gallery folder to write (created; its index.html is printed at the end)",
    )
    parser.add_argument(
        "--all-attempts",
        action="store_true",
        help="with ALBUM: one card per attempt, not only each target's newest one",
    )
    parser.set_defaults(handler=report_command)
    return parser


def report_command(args: argparse.Namespace, session: Session, *, stdout: TextIO | None = None) -> int:
    """Run ``refsr report`` from parsed arguments: build the gallery, print its path, return 0.

    Raises ValueError for a wrong combination of arguments or an unknown album/run.
    """
    album, run_id = getattr(args, "album", None), getattr(args, "run_id", None)
    if album is not None and run_id is not None:
        raise ValueError(f"give either ALBUM or --run RUN_ID, not both (got album={album!r}, run={run_id!r})")
    if album is None and run_id is None:
        run_id = _last_enhance_run(session)
    index = build_gallery(
        session,
        album_root=album,
        run_id=run_id,
        out_dir=getattr(args, "gallery_dir", None),
        latest_only=not getattr(args, "all_attempts", False),
        home=getattr(args, "home_resolved", None),
    )
    print(index, file=stdout or sys.stdout)
    return 0


def _last_enhance_run(session: Session) -> int:
    """The newest run that recorded enhancements: what `refsr report` alone shows."""
    newest = session.scalars(select(Enhancement.run_id).where(Enhancement.run_id.is_not(None))
                             .order_by(Enhancement.run_id.desc()).limit(1)).first()
    if newest is None:
        raise ValueError("no enhancement recorded yet: run `refsr enhance ALBUM` first")
    return int(newest)


def gallery_markdown(path: str | os.PathLike[str]) -> str:
    """Markdown for a Prefect artifact that links to the gallery's index.html (a file: URI)."""
    index = Path(os.path.abspath(path))
    # as_uri() percent-encodes spaces and brackets; the angle brackets let any remaining ")" pass.
    uri = index.as_uri()
    fence = "`" * (max((len(run) for run in _backtick_runs(str(index))), default=0) + 1)
    return (
        "### Before/after gallery\n\n"
        f"[Open the gallery](<{uri}>) — a static page, no server needed: "
        f"{fence} {index} {fence}\n"
    )


def _backtick_runs(text: str) -> list[str]:
    runs, current = [], ""
    for ch in text:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def default_gallery_dir(session: Session, *, album_id: int | None = None, run_id: int | None = None,
                        home: str | os.PathLike[str] | None = None) -> Path:
    """<SQLite database folder>/galleries/run-<id> or album-<id>.

    A server database has no folder: its galleries go under the workspace (`home`, REFSR_HOME),
    in a folder named after the database so that two databases never share an `album-1`.
    """
    name = f"run-{run_id}" if run_id is not None else f"album-{album_id}"
    url = session.get_bind().engine.url
    db_file = sqlite_file(url)
    if db_file is not None:
        return db_file.parent / GALLERY_FOLDER / name
    if home is None:
        raise ValueError("a gallery of a server database needs the workspace folder (REFSR_HOME) or --out")
    shown_url = url.render_as_string(hide_password=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{url.host or 'local'}-{url.database or ''}").strip("-")[:40]
    digest = hashlib.sha256(shown_url.encode()).hexdigest()[:8]
    return Path(os.path.abspath(home)) / GALLERY_FOLDER / f"{slug}-{digest}" / name


def _find_album(session: Session, album_root: str | os.PathLike[str]) -> Album:
    candidates = [os.path.abspath(album_root), os.path.realpath(album_root)]
    for root in dict.fromkeys(candidates):
        album = queries.get_album(session, root)
        if album is not None:
            return album
    raise ValueError(f"no album registered at {candidates[0]!r}: run `refsr enhance` on it first")


def _photo_path(photo: Photo) -> Path:
    return Path(photo.album.root, *photo.rel_path.split("/"))


def _timings(raw: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(raw, dict):
        return ()
    return tuple(
        (str(k), float(v)) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    )


def _restored_detail(enh: Enhancement, references: Sequence[GalleryReference]) -> str | None:
    """A copy given its original back: which reference, and how much of the output and how faithful it is."""
    if not enh.restored_from_sha256:
        return None
    ref = next((r for r, row in zip(references, enh.references) if row.ref_sha256 == enh.restored_from_sha256), None)
    fit = enh.restoration or {}
    how = ", ".join(part for part in (
        f"{fit['covered']:.0%} of the pixels" if "covered" in fit else "",
        f"fidelity to the copy {fit['fidelity_db']:.1f} dB" if "fidelity_db" in fit else "") if part)
    name = ref.label if ref is not None else f"sha256:{enh.restored_from_sha256[:12]}"
    return f"its original {name} ({how}); the model made the rest" if fit.get("covered", 1) < 1 \
        else f"its original {name} ({how})"


def _card(enh: Enhancement, out_dir: Path, album_root: str | None) -> GalleryCard:
    target = _photo_path(enh.target)
    output = Path(enh.output_path) if enh.output_path else None
    bicubic = None
    if enh.status is EnhancementStatus.succeeded:
        try:
            size = None
            if output is not None and output.is_file():
                header = read_header(output)
                size = (header.width, header.height)
            # The pipeline stores no bicubic upscale; it is cheap, so the gallery makes its own.
            bicubic = ensure_bicubic(target, out_dir / ASSETS_DIR / "bicubic", size)
        except (OSError, UnreadableImageError) as exc:
            logger.warning("report: no bicubic upscale for %s: %s", target, exc)
    inliers = {c.get("sha256"): c.get("inliers") for c in enh.candidates or [] if isinstance(c, dict)}
    references = tuple(
        GalleryReference(
            label=ref.photo.rel_path if ref.photo.album.root == album_root else str(_photo_path(ref.photo)),
            path=_photo_path(ref.photo),
            rank=ref.rank,
            cosine=ref.cosine,
            relevance=ref.relevance,
            inliers=inliers.get(ref.ref_sha256),
        )
        for ref in enh.references
    )
    details: list[tuple[str, str]] = [("device", enh.device), ("embedder", enh.embedder)]
    restored = _restored_detail(enh, references)
    if restored is not None:
        details.insert(0, ("restored from", restored))
    if enh.run_id is not None:
        details.append(("run", str(enh.run_id)))
    details.append(("when", enh.created_at.strftime("%Y-%m-%d %H:%M UTC")))
    return GalleryCard(
        key=f"e{enh.id}",
        title=enh.target.rel_path,
        status=enh.status,
        target_path=target,
        enhanced_path=output,
        bicubic_path=bicubic,
        references=references,
        model=f"{enh.model_name} ({enh.model_sha256[:12]})",
        timings=_timings(enh.timings),
        details=tuple(details),
        params=json.dumps(enh.params, sort_keys=True, ensure_ascii=False, default=str, indent=1) if enh.params else "",
        error=enh.error,
        attention=Path(enh.attention_path) if enh.attention_path else None,
        restored=bool(enh.restored_from_sha256),
    )


def build_gallery(
    session: Session,
    *,
    album_root: str | os.PathLike[str] | None = None,
    run_id: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    latest_only: bool = True,
    settings: GallerySettings | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the gallery for a run (``run_id``) or an album (``album_root``) and return its index.html.

    Album: the newest attempt of each target (every attempt with ``latest_only=False``). Run:
    every enhancement the run recorded; with ``album_root`` too, the run must belong to it.
    Failures come first, then targets by name. Only reads the database.
    """
    summary: list[tuple[str, str]] = []
    enhancements: Sequence[Enhancement]
    album: Album | None
    if run_id is not None:
        album = _find_album(session, album_root) if album_root is not None else None
        run = session.get(Run, run_id)
        if run is None:
            raise ValueError(f"no run with id {run_id!r}: `refsr history` lists them")
        if album is not None and run.album_id != album.id:
            raise ValueError(f"run {run_id!r} belongs to album id {run.album_id!r}, not {album.root!r}")
        enhancements = queries.enhancements_for_run(session, run_id)
        album = album or run.album
        title = f"refsr gallery · run {run_id}"
        started = run.started_at.strftime("%Y-%m-%d %H:%M UTC")
        summary += [("run", f"{run_id} ({run.kind.value}, {run.status.value})"), ("started", started)]
    elif album_root is not None:
        album = _find_album(session, album_root)
        enhancements = queries.enhancements_for_album(session, album.id, latest_only=latest_only)
        title = f"refsr gallery · {Path(album.root).name or album.root}"
    else:
        raise ValueError("build_gallery needs album_root or run_id, got neither")
    if album is None and enhancements:
        album = enhancements[0].target.album
    if album is not None:
        summary.insert(0, ("album", album.root))
    models = sorted({e.model_name for e in enhancements})
    if models:
        summary.append(("model", ", ".join(models)))

    out = (
        Path(os.path.abspath(out_dir))
        if out_dir is not None
        else default_gallery_dir(session, album_id=album.id if album is not None else None, run_id=run_id, home=home)
    )
    ordered = sorted(
        enhancements,
        key=lambda e: (e.status is EnhancementStatus.succeeded, e.target.rel_path, e.id),
    )
    cards = [_card(enh, out, album.root if album is not None else None) for enh in ordered]
    index = render_gallery(
        cards, out, title=title, summary=summary, settings=settings or GallerySettings()
    )
    logger.info("report: %d cards → %s", len(cards), index)
    return index


__all__ = [
    "add_report_parser",
    "build_gallery",
    "default_gallery_dir",
    "gallery_markdown",
    "report_command",
]
