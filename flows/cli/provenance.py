"""`refsr which-ref` and `refsr verify`: what made a file, from the database and from the file itself."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

from flows.cli.output import jsonable
from flows.preflight import UsageError, shown

EXIT_OK, EXIT_FAILED = 0, 1
_VERIFY_EPILOG = ("examples:\n  refsr verify examples/album/enhanced/leuven/from-chat/leuvenA-small.jpg\n"
                  "  refsr verify photo.jpg --json\n\n"
                  "exit status: 0 the manifest is intact, 1 it is missing, edited or its signature fails, 2 bad usage")


def add_verify_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "verify", formatter_class=formatter, help="check a file's Content Credentials (signature and pixels)",
        description=textwrap.dedent("""\
            Check the C2PA manifest that refsr signed into FILE: that the signature is valid and that the
            file's bytes (pixels and XMP) are the ones signed. An edited, re-encoded or cropped copy
            fails with the reason. No database is needed: the answer comes from the file alone, and the
            provenance it carries (target and reference hashes, scores, model, run) is shown. A file signed
            with refsr's local key proves integrity (unchanged since refsr wrote it), not identity.
            """),
        epilog=_VERIFY_EPILOG)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _print_provenance(p: Any, indent: str = "    ") -> None:
    target = f" ({shown(p.target_name)})" if p.target_name else ""
    print(f"{indent}derived from target sha256:{p.target_sha256}{target}")
    if not p.references and p.restored_from is None:
        print(f"{indent}no reference: enhanced from the photo alone (no album photo lent texture)")
    for r in p.references:
        name = f" ({shown(r.name)})" if r.name else ""
        print(f"{indent}reference #{r.rank + 1}: sha256:{r.sha256}{name}  cosine {r.cosine:.3f}  "
              f"relevance {r.relevance:.3f}")
    if p.restored_from is not None:
        r = p.restored_from
        name = f" ({shown(r.name)})" if r.name else ""
        print(f"{indent}restored from its original sha256:{r.sha256}{name}: {r.covered:.1%} of the pixels, "
              f"fidelity to the copy {r.fidelity_db:.1f} dB")
    run = f"; run #{p.run_id}" if p.run_id is not None else ""
    print(f"{indent}model {shown(p.model_name)} ({p.model_sha256[:12]}) by {shown(p.software)}{run} at "
          f"{p.when.isoformat()}")


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.provenance.credentials import summary, verify

    if not args.file.is_file():
        raise UsageError(f"{shown(args.file)} is not a file")
    verdict = verify(args.file)
    if args.json:
        print(json.dumps(summary(verdict), indent=1))
        return EXIT_OK if verdict.ok else EXIT_FAILED
    print(f"{shown(args.file)}: {'OK' if verdict.ok else 'FAILED'}: {shown(verdict.reason)}",
          file=sys.stdout if verdict.ok else sys.stderr)
    if verdict.signer:
        print(f"  signed by {shown(verdict.signer)} (state {verdict.state})")
    for failure in verdict.failures:
        print(f"  {shown(failure)}")
    if verdict.provenance is not None:
        _print_provenance(verdict.provenance, "  ")
    return EXIT_OK if verdict.ok else EXIT_FAILED


def _restored_line(e: Any) -> str:
    """One enhancement's restoration from the target's original, as which-ref prints it."""
    fit = e.restoration or {}
    facts = [f"{fit['covered']:.1%} of the pixels" if "covered" in fit else "",
             f"{fit['inliers']} inliers" if "inliers" in fit else "",
             f"fidelity to the copy {fit['fidelity_db']:.1f} dB" if "fidelity_db" in fit else ""]
    where = shown(e.restored_from) if e.restored_from else f"sha256:{e.restored_from_sha256}"
    return f"restored from its original {where} ({', '.join(f for f in facts if f)})"


def cmd_which_ref(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    from flows.provenance import describe_path

    answer = describe_path(settings_of(args), args.path)
    if answer.kind == "unknown" and not Path(answer.path).exists():
        # A deleted output is still answered from its records; a path nothing knows is a mistake.
        raise UsageError(f"not found: {shown(answer.path)}")
    if args.json:
        print(json.dumps(jsonable(answer), indent=1))
        return EXIT_OK if answer.enhancements or answer.file else EXIT_FAILED
    for c in answer.copies:
        scale = f" (x{c.scale:.2f})" if c.scale else ""
        print(f"{shown(c.copy)} is a copy of {shown(c.original)}{scale}",
              file=sys.stdout if answer.enhancements else sys.stderr)
    if not answer.enhancements and answer.file is None:
        print(f"{shown(answer.path)}: {shown(answer.note)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{shown(answer.path)} ({answer.kind})")
    if answer.note:
        print(f"  {shown(answer.note)}")
    for e in answer.enhancements:
        print(f"- enhancement #{e.id} of {shown(e.target)}  [{e.status}]{'  (current file)' if e.current else ''}")
        if not e.references and e.candidates and e.status == "succeeded":
            print("    no reference: none of the candidates below lent texture (not verified, relevance under "
                  "--min-relevance); enhanced from the photo alone")
        for r in e.references:
            verified = "" if r.inliers is None else f"  inliers {r.inliers}"
            print(f"    reference #{r.rank + 1}: {shown(r.path)}  cosine {r.cosine:.3f}{verified}  "
                  f"relevance {r.relevance:.3f}")
        if e.restored_from_sha256:
            print(f"    {_restored_line(e)}")
        if e.candidates:
            print(f"    candidates, as ranked ({len(e.candidates)}; first {min(5, len(e.candidates))} shown; "
                  "--json for all):")
            for c in e.candidates[:5]:
                rel = "-" if c.relevance is None else f"{c.relevance:.3f}"
                inl = "-" if c.inliers is None else str(c.inliers)
                print(f"      {shown(c.path or c.sha256[:12])}  cosine {c.cosine:.3f}  inliers {inl}  relevance {rel}")
        print(f"    model {shown(e.model_name)} ({e.model_sha256[:12]}) on {e.device}; run #{e.run_id} at {e.created_at}")
        if e.output_path:
            print(f"    output {shown(e.output_path)}")
        if e.credentials:
            note = f" ({shown(e.credentials_note)})" if e.credentials_note else ""
            print(f"    in the file: {e.credentials}{note}")
        if e.error:
            print(f"    error {shown(e.error)}")
    if answer.file is not None and not answer.enhancements:
        f = answer.file
        how = "signed manifest" if f.carrier == "c2pa" else "XMP"
        print(f"- from the file's {how}: {shown(f.reason)}")
        _print_provenance(f.provenance)
    return EXIT_OK
