"""What the album commands print: summaries as plain dicts (also what a no-op run reprints), tables, JSON."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

from flows.preflight import shown


def print_table(rows: list[list[str]], header: list[str]) -> None:
    rows = [[shown(x) for x in row] for row in rows]  # names from the album never reach the terminal raw
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


_SCAN_KEYS = ("new", "changed", "unchanged", "unreadable", "gone")


def took(status: str, seconds: float | None) -> str:
    """A run's time for `refsr history`: a crashed run ends at its last record, so it ran at least that long."""
    if seconds is None or (status == "crashed" and seconds <= 0):
        return "-"
    return f"{'>=' if status == 'crashed' else ''}{seconds:.1f}s"


def scan_line(scan: dict[str, Any]) -> str:
    return "  ".join(f"{k} {scan.get(k, 0)}" for k in _SCAN_KEYS)


def _neither_line(data: dict[str, Any]) -> None:
    if data.get("neither"):
        print(f"  {data['neither']} photo(s) are neither target nor reference (roles: see `refsr index --help`)")


def _unread_lines(scan: dict[str, Any]) -> None:
    """Each photo the scan listed but did not use, and the photo files it skipped for their format."""
    for rel, reason in scan.get("unreadable_paths", []):
        print(f"  unreadable: {shown(rel)}: {shown(reason)}")
    skipped = scan.get("skipped_formats") or []
    if skipped:
        kinds = ", ".join(f"{n} {ext.upper()}" for ext, n in skipped)
        heif = " (HEIC/HEIF: `pip install pillow-heif` adds them)" if any(e in ("heic", "heif") for e, _ in skipped) else ""
        print(f"  not read: {kinds} file(s) of a format refsr does not read; convert them to JPEG or PNG{heif}")


def print_index(data: dict[str, Any]) -> None:
    """`refsr index`'s summary from its JSON form (an IndexSummary as `jsonable` makes it)."""
    scan, index = data["scan"], data.get("index")
    print(f"album {shown(data['album'])}")
    print(f"  {scan_line(scan)}")
    print(f"  targets {scan['targets']}  references {scan['references']}  embedded {data['embedded']}"
          + (f"  index {index['size']} vectors ({index['embedder_key']})" if index else ""))
    _neither_line(data)
    _unread_lines(scan)
    for failure in data.get("embed_failures", []):
        print(f"  not embedded: {shown(failure['rel_path'])}: {shown(failure['error'])}")
    _copies_lines(data)
    if not (scan["new"] or scan["changed"] or scan["gone"]):
        print("  nothing changed since the last scan (no pixels read)")


def _copies_lines(data: dict[str, Any], shown_max: int = 5) -> None:
    """The album's copies, as the index found them (the first few; `refsr copies` lists all)."""
    found = (data.get("copies") or {}).get("copies") or []
    if not found:
        return
    print(f"  copies {len(found)}: a smaller, recompressed, cropped or edited version of another album photo"
          + (f" (first {shown_max}; `refsr copies ALBUM` lists all)" if len(found) > shown_max else ""))
    for c in found[:shown_max]:
        scale = f"  x{c['scale']:.2f}" if c.get("scale") else ""
        print(f"    {shown(c['copy'])}  is a copy of  {shown(c['original'])}{scale}")


def as_unchanged_index(data: dict[str, Any]) -> dict[str, Any]:
    """A remembered index summary as a run that found nothing new reports it."""
    scan = {**data["scan"], "unchanged": sum(data["scan"].get(k, 0) for k in ("new", "changed", "unchanged")),
            "new": 0, "changed": 0, "gone": 0}
    return {**data, "scan": scan, "embedded": 0, "embed_failures": []}


def as_cached_enhance(data: dict[str, Any]) -> dict[str, Any]:
    """A remembered enhance summary as a run that had nothing to do reports it: every enhancement cached."""
    outcomes = [{**o, "status": "cached" if o["status"] == "enhanced" else o["status"], "reranked": False,
                 "timings": {}} for o in data["outcomes"]]
    index = as_unchanged_index(data["index"])
    return {**data, "outcomes": outcomes, "index": index}


def enhance_counts(data: dict[str, Any]) -> dict[str, int]:
    counts = {k: 0 for k in ("enhanced", "cached", "failed", "no-reference")}
    for o in data["outcomes"]:
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    return counts


def print_enhance(data: dict[str, Any], *, wall_s: float) -> None:
    """`refsr enhance`'s summary from its JSON form (an EnhanceSummary as `jsonable` makes it)."""
    scan = data["index"]["scan"]
    print(f"album {shown(data['album'])} -> {shown(data['out_dir'])}")
    print(f"  scan: {scan_line(scan)}  ({scan['targets']} targets, {scan['references']} references)")
    _neither_line(data)
    _copies_lines(data["index"])
    _unread_lines(scan)
    for failure in data["index"].get("embed_failures", []):  # e.g. a photo replaced since its scan
        print(f"  not embedded: {shown(failure['rel_path'])}: {shown(failure['error'])}")
    print(f"  model {shown(Path(data['model_path']).name)} ({data['model_sha256'][:12]}) on {data['device']}; "
          f"run #{data['run_id']}")
    if data.get("recovered_runs"):
        print(f"  earlier runs {list(data['recovered_runs'])} had been killed; marked crashed, picking up")
    rows = []
    for o in data["outcomes"]:
        refs = ", ".join(f"{p} (cos {r['cosine']:.2f}, rel {r['relevance']:.2f})"
                         for p, r in zip(o["ref_paths"], o["references"]))
        if o.get("restored") and o["ref_paths"]:  # a copy given its original back (pipeline/matching/restore.py)
            refs = f"restored from its original {o['ref_paths'][0]}"
        if not refs and o["status"] in ("enhanced", "cached"):
            refs = "from itself: no candidate lent texture (--min-relevance)"
        detail = o["error"] if o["status"] in ("failed", "no-reference") else refs
        sr = o["timings"].get("sr_s") or o["timings"].get("restore_s")
        rows.append([o["rel_path"], o["status"], f"{sr:.1f}s" if sr else "-", detail or "-"])
    if rows:
        print()
        print_table(rows, ["target", "status", "sr", "references (cosine, relevance) / reason"])
    counts = enhance_counts(data)
    print()
    print("  " + "  ".join(f"{k} {v}" for k, v in counts.items()) + f"  in {wall_s:.1f}s")
    print("  " + verdict(counts, stopped=bool(data.get("stopped"))))
    if data.get("gallery"):
        print(f"  gallery: {shown(data['gallery'])}")


def verdict(counts: dict[str, int], *, stopped: bool = False) -> str:
    """One line that claims only what the counts show."""
    total = sum(counts.values())
    done = counts.get("enhanced", 0) + counts.get("cached", 0)
    if stopped:
        parts = [f"stopped by Ctrl-C: {done} of {total} target(s) have an enhancement"]
        if counts.get("enhanced"):
            parts.append(f"{counts['enhanced']} of them made by this run")
        if counts.get("dropped"):
            parts.append(f"{counts['dropped']} in progress dropped after the grace period (not recorded)")
        if counts.get("not-started"):
            parts.append(f"{counts['not-started']} not started")
        return "; ".join(parts) + "; run the command again to do the rest"
    if total == 0:
        return ("no targets: no photo of the album is small enough next to another to be enhanced "
                "(roles: see `refsr index --help`)")
    if counts.get("failed"):
        return f"{counts['failed']} of {total} target(s) failed; the reasons are above and in `refsr which-ref`"
    if counts.get("no-reference"):
        return (f"{done} of {total} target(s) have an enhancement; {counts['no-reference']} have no reference "
                "(the reason is in the table)")
    if counts.get("enhanced"):
        return f"done: {counts['enhanced']} target(s) enhanced now, {counts.get('cached', 0)} already done"
    return f"nothing to do: all {total} target(s) are already enhanced with their best reference and this model"
