"""`refsr sr`'s checks before any model work: inputs that exist, an output it can write, nothing overwritten."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flows.preflight import UsageError, check_output_folder, shown
from pipeline.params import WRITABLE_EXTENSIONS  # torch-free
from ttsr_core.config import SCALE  # torch-free


def check_sr_paths(lr: Path, refs: Sequence[Path], out: Path, attention: Path | None) -> None:
    """Each input exists and is a file; OUT has a writable extension; neither OUT nor NPZ is an input."""
    from pipeline.images import same_file

    for role, path in [("input photo", lr), *(("reference", r) for r in refs)]:
        if not path.exists():
            raise UsageError(f"{role} not found: {shown(path)}")
        if not path.is_file():
            raise UsageError(f"{role} is not a file: {shown(path)}")
    if out.suffix.lower() not in WRITABLE_EXTENSIONS:
        raise UsageError(f"cannot write {out.suffix or 'a file without extension'!r} images: {shown(out)}; "
                         f"end --out with one of {', '.join(sorted(WRITABLE_EXTENSIONS))}")
    inputs = [lr, *refs]
    for flag, path in (("--out", out), ("--attention", attention)):
        if path is None:
            continue
        for given in inputs:
            if same_file(path, given):
                raise UsageError(f"{flag} {shown(path)} is an input photo; an input is never overwritten")
        if path.is_dir():
            raise UsageError(f"{flag} {shown(path)} is a folder; give a file name")
    if attention is not None and same_file(attention, out):
        raise UsageError(f"--attention and --out are the same file: {shown(out)}")
    check_output_folder(out.parent if str(out.parent) else Path("."))
    if attention is not None:
        check_output_folder(attention.parent if str(attention.parent) else Path("."))


def small_references(lr: Path, refs: Sequence[Path]) -> list[str]:
    """A warning for each reference smaller than the x4 output (it has less detail than the output needs)."""
    from pipeline import images

    try:
        target = images.read_header(lr)
    except images.UnreadableImageError as exc:
        raise UsageError(f"input photo is unreadable: {shown(lr)} ({exc.reason})") from None
    out_w, out_h = target.width * SCALE, target.height * SCALE
    warnings = []
    for ref in refs:
        try:
            header = images.read_header(ref)
        except images.UnreadableImageError as exc:
            raise UsageError(f"reference is unreadable: {shown(ref)} ({exc.reason})") from None
        if max(header.width, header.height) < max(out_w, out_h):
            warnings.append(f"reference {shown(ref)} ({header.width}x{header.height}) is smaller than the x4 output "
                            f"({out_w}x{out_h}): it has less detail to lend than the output needs; a larger photo "
                            "of the same scene works better")
    return warnings
