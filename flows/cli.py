"""The `refsr` command: index and enhance albums, super-resolve one photo, answer provenance questions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_COMMON_EPILOG = """\
environment:
  REFSR_HOME          workspace (database, FAISS files, caches, locks);
                      default $XDG_DATA_HOME/refsr-album or ~/.local/share/refsr-album
  REFSR_DATABASE_URL  any SQLAlchemy URL; default sqlite:///$REFSR_HOME/refsr.db
                      (PostgreSQL for several machines: postgresql+psycopg://user@host/refsr)
  REFSR_MODEL         TTSR checkpoint; default the compact model shipped in models/ttsr-lite/
  REFSR_DEVICE        auto | cpu | cuda
  REFSR_CLIP_WEIGHTS  local open_clip weights; without them a built-in embedder is used
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions and examples; defaults are stated in each help text."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 16:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 16], got {text!r}")
    return value


def _workspace_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workspace")
    g.add_argument("--home", type=Path, default=None, help="workspace folder (overrides $REFSR_HOME)")
    g.add_argument("--db", dest="database_url", default=None, metavar="URL",
                   help="database URL (overrides $REFSR_DATABASE_URL)")


def _scan_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("album roles (default: the album's refsr.toml, else 1600 / 1024)")
    g.add_argument("--min-ref-side", type=_positive_int, default=None, metavar="PX",
                   help="a photo whose long side is at least PX is a reference candidate")
    g.add_argument("--max-target-side", type=_positive_int, default=None, metavar="PX",
                   help="a photo whose long side is at most PX is an enhancement target")
    g.add_argument("--embedder", choices=["auto", "clip", "fallback"], default=None,
                   help="auto = CLIP when its weights are on disk, else the built-in descriptor")


def _model_args(p: argparse.ArgumentParser, *, album: bool) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="TTSR checkpoint (.safetensors/.pt, ours or the authors'); default $REFSR_MODEL or "
                        "the shipped models/ttsr-lite/ttsr-lite-x4.safetensors")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="auto = CUDA with mixed precision when present, else CPU (default auto)")
    g.add_argument("--search", choices=["fast", "exact"], default=None,
                   help="texture search: fast = coarse-to-fine (default when available), exact = the paper's "
                        "exhaustive search")
    g.add_argument("--outscale", type=_positive_float, default=None, metavar="X",
                   help="final scale; the model works at x4 and the result is resized (default 4)")
    g.add_argument("--format", dest="output_format", choices=["jpeg", "png", "webp", "tiff"], default=None,
                   help="output format (default: same as the input). In an album, a converted name that "
                        "two photos would share keeps its old extension: a.jpg → a.jpg.png beside a.png")
    if album:
        g.add_argument("--refs", type=_positive_int, default=None, metavar="N",
                       help="references per target, best first (default 1)")
        g.add_argument("--top-k", type=_positive_int, default=None, metavar="K",
                       help="cosine candidates re-ranked by the model's own texture relevance (default 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refsr",
        formatter_class=_Formatter,
        description=textwrap.dedent("""\
            Reference-based super-resolution for photo albums.

            Small photos in an album are enlarged x4 by the texture transformer (TTSR), which copies
            real detail from the best matching large photo of the same album. Every output remembers
            which photo lent it texture.
            """),
        epilog="first steps:\n  refsr enhance examples/album      # index + enhance the sample album\n"
               "  refsr which-ref examples/album/enhanced/<photo>\n  refsr history\n\n" + _COMMON_EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's and refsr's own logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "index", formatter_class=_Formatter, help="scan an album and update its photo index",
        description=textwrap.dedent("""\
            Scan ALBUM recursively, hash new and changed photos, decide each photo's role by its size
            (target to enhance, or reference to lend texture), embed it, and update the album's vector
            index. Incremental: unchanged files (same size and mtime) are not opened, so a second run
            on an unchanged album reads no pixels.
            """),
        epilog="examples:\n  refsr index ~/Pictures/2019\n  refsr index examples/album --json\n"
               "  refsr index ~/Pictures --min-ref-side 1200 --max-target-side 800\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder")
    _scan_args(p)
    _workspace_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "enhance", formatter_class=_Formatter, help="enhance every target photo of an album",
        description=textwrap.dedent("""\
            Index ALBUM (incrementally), then for every target photo: find reference candidates by
            embedding similarity, re-rank them by the texture model's own relevance, and write a x4
            enhancement to the mirrored path under --out, keeping EXIF and colour profile. A photo
            whose job (photo, references, model, settings) already succeeded is not redone; a new
            photo, a better reference or another model produces a new record beside the old one.
            Exit status 1 when any photo failed (each failure is recorded with its reason).
            """),
        epilog="examples:\n  refsr enhance examples/album\n"
               "  refsr enhance ~/Pictures/2019 --out ~/Pictures/2019-enhanced --refs 2 --top-k 8\n"
               "  refsr enhance ~/Pictures/2019 --device cuda --outscale 2 --format png\n"
               "  refsr enhance ~/Pictures/2019 --force      # redo everything\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (mirrors the album's sub-folders); default ALBUM/enhanced")
    _model_args(p, album=True)
    p.add_argument("--force", action="store_true", help="redo enhancements even when already done")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="photos in flight at once; the model itself runs one at a time per device (default 2)")
    _scan_args(p)
    _workspace_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not build the HTML gallery at the end")

    p = sub.add_parser(
        "sr", formatter_class=_Formatter, help="enhance one photo with references you choose (no database)",
        description="Super-resolve LR x4 with one or more reference photos, best first. Nothing is indexed "
                    "or recorded; the soft-attention map can be saved with --attention.",
        epilog="examples:\n  refsr sr small.jpg --ref big.jpg --out small_x4.jpg\n"
               "  refsr sr small.jpg --ref a.jpg --ref b.jpg --out out.png --outscale 2\n\n" + _COMMON_EPILOG)
    p.add_argument("lr", type=Path, metavar="LR", help="the photo to enhance")
    p.add_argument("--ref", type=Path, action="append", required=True, metavar="REF",
                   help="a reference photo (repeat for several)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT", help="output file (format from extension)")
    p.add_argument("--attention", type=Path, default=None, metavar="NPY", help="also save soft attention here")
    _model_args(p, album=False)

    p = sub.add_parser(
        "which-ref", formatter_class=_Formatter, help="which reference produced an output (or a target's history)",
        description="PATH is an enhanced output or an album photo. For an output: the reference(s) that lent "
                    "it texture, their scores, the model, the run and when. For a target: every enhancement "
                    "it has had, newest first.",
        epilog="examples:\n  refsr which-ref examples/album/enhanced/leuven/from-chat/leuvenA-small.jpg\n"
               "  refsr which-ref examples/album/leuven/from-chat/leuvenA-small.jpg --json\n\n" + _COMMON_EPILOG)
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _workspace_args(p)

    p = sub.add_parser(
        "history", formatter_class=_Formatter, help="past runs with their counts and status",
        description="Runs newest first: kind, album, start, duration, status and counts. Runs whose process "
                    "died are shown as crashed once any later refsr command starts.",
        epilog="examples:\n  refsr history\n  refsr history examples/album --json\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, nargs="?", default=None, metavar="ALBUM", help="only this album")
    p.add_argument("--limit", type=_positive_int, default=20, help="show at most this many runs (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _workspace_args(p)

    p = sub.add_parser(
        "serve", formatter_class=_Formatter, help="enhance an album on a schedule (Prefect deployment)",
        description=textwrap.dedent("""\
            Serve the enhance flow for ALBUM as a Prefect deployment with a schedule; runs until
            stopped (Ctrl-C). Each scheduled run is incremental: only new photos cost model work.
            Start `prefect server start` first and set PREFECT_API_URL=http://127.0.0.1:4200/api to see
            runs in the UI. Workers on other machines can take the same flow from a work pool
            (`prefect worker start --pool refsr`) when they share REFSR_DATABASE_URL (PostgreSQL)
            and see the album at the same path.
            """),
        epilog="examples:\n  refsr serve ~/Pictures --interval 3600\n"
               "  refsr serve ~/Pictures --cron '0 3 * * *' --device cuda\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="cron schedule, e.g. '0 3 * * *'")
    when.add_argument("--interval", type=_positive_int, metavar="SECONDS", help="run every SECONDS")
    p.add_argument("--name", default=None, help="deployment name (default refsr-<album folder name>)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder; default ALBUM/enhanced")
    _model_args(p, album=True)
    _scan_args(p)
    _workspace_args(p)
    from flows.report import add_report_parser

    _workspace_args(add_report_parser(sub))
    return parser


# -- settings ----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **extra: Any):  # type: ignore[no-untyped-def]
    from flows.settings import Settings

    def get(name: str) -> Any:
        return getattr(args, name, None)

    return Settings.from_env(
        home=get("home"), database_url=get("database_url"), model_path=get("model"), device=get("device"),
        search=get("search"), embedder=get("embedder"), min_ref_side=get("min_ref_side"),
        max_target_side=get("max_target_side"), top_k=get("top_k"), refs=get("refs"), outscale=get("outscale"),
        output_format=get("output_format"), out_dir=get("out"), force=get("force") or None,
        workers=get("workers"), **extra,
    )


def _configure_logging(verbose: bool) -> None:
    # Must run before prefect is imported: Prefect reads its logging level at import time.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def _jsonable(obj: Any) -> Any:
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


# -- commands ----------------------------------------------------------------------------------


def _cmd_index(args: argparse.Namespace) -> int:
    from flows.indexing import index_album

    settings = _settings(args, progress=not args.no_progress and not args.json and sys.stderr.isatty())
    summary = index_album(str(args.album), settings)
    if args.json:
        print(json.dumps(_jsonable(summary), indent=1))
        return EXIT_OK
    scan = summary.scan
    print(f"album {summary.album}")
    print(f"  new {scan.new}  changed {scan.changed}  unchanged {scan.unchanged}  "
          f"unreadable {scan.unreadable}  gone {scan.gone}")
    print(f"  targets {scan.targets}  references {scan.references}  embedded {summary.embedded}"
          + (f"  index {summary.index.size} vectors ({summary.index.embedder_key})" if summary.index else ""))
    for rel, reason in scan.unreadable_paths:
        print(f"  unreadable: {rel}: {reason}")
    for failure in summary.embed_failures:
        print(f"  not embedded: {failure.rel_path}: {failure.error}")
    if not (scan.new or scan.changed or scan.gone):
        print("  nothing changed since the last scan (no pixels read)")
    return EXIT_OK


def _cmd_enhance(args: argparse.Namespace) -> int:
    from flows.enhancing import Outcome, enhance_album
    from flows.settings import ModelNotFoundError

    settings = _settings(args, progress=not args.no_progress and not args.json and sys.stderr.isatty(),
                         report=not args.no_report)
    try:
        settings.check_model()
    except ModelNotFoundError as exc:
        print(f"refsr enhance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from prefect.task_runners import ThreadPoolTaskRunner

    flow = enhance_album.with_options(task_runner=ThreadPoolTaskRunner(max_workers=settings.workers))
    summary = flow(str(args.album), settings)
    gallery = summary.gallery
    if args.json:
        data = _jsonable(summary)
        data["gallery"] = str(gallery) if gallery else None
        print(json.dumps(data, indent=1))
        return EXIT_FAILED if summary.failed else EXIT_OK
    scan = summary.index.scan
    print(f"album {summary.album} -> {summary.out_dir}")
    print(f"  scan: new {scan.new}  changed {scan.changed}  unchanged {scan.unchanged}  "
          f"unreadable {scan.unreadable}  gone {scan.gone}  ({scan.targets} targets, {scan.references} references)")
    print(f"  model {Path(summary.model_path).name} ({summary.model_sha256[:12]}) on {summary.device}; "
          f"run #{summary.run_id}")
    if summary.recovered_runs:
        print(f"  earlier runs {list(summary.recovered_runs)} had been killed; marked crashed, picking up")
    rows = []
    for o in summary.outcomes:
        refs = ", ".join(f"{p} (cos {r.cosine:.2f}, rel {r.relevance:.2f})" for p, r in zip(o.ref_paths, o.references))
        detail = o.error if o.status in (Outcome.FAILED, Outcome.NO_REFERENCE) else refs
        rows.append([o.rel_path, o.status.value, f"{o.timings.get('sr_s', 0.0):.1f}s" if o.timings.get("sr_s") else "-",
                     detail or "-"])
    if rows:
        print()
        _print_table(rows, ["target", "status", "sr", "references (cosine, relevance) / reason"])
    counts = summary.counts()
    print()
    print("  " + "  ".join(f"{k} {v}" for k, v in counts.items()) + f"  in {summary.wall_s:.1f}s")
    if not summary.model_work and summary.outcomes:
        print("  nothing to do: every target is already enhanced with its best reference and this model")
    if gallery is not None:
        print(f"  gallery: {gallery}")
    return EXIT_FAILED if summary.failed else EXIT_OK


def _cmd_sr(args: argparse.Namespace) -> int:
    from flows import runtime
    from flows.settings import ModelNotFoundError
    from pipeline.enhance import enhance_photo

    settings = _settings(args)
    try:
        model_path = settings.check_model()
    except ModelNotFoundError as exc:
        print(f"refsr sr: {exc}", file=sys.stderr)
        return EXIT_USAGE
    device = runtime.resolve_device(settings.device)
    ckpt = runtime.model(model_path, device.name)
    result = enhance_photo(ckpt.model, args.lr, args.ref, args.out, settings.enhance_params(device.amp_dtype),
                           attention_path=args.attention, device=device.name)
    print(f"{result.output_path}  {result.width}x{result.height} {result.format}  "
          f"sr {result.timings['sr_s']:.1f}s on {result.device}  (model {ckpt.name} {ckpt.sha256[:12]})")
    return EXIT_OK


def _cmd_which_ref(args: argparse.Namespace) -> int:
    from flows.provenance import describe_path

    settings = _settings(args)
    answer = describe_path(settings, args.path)
    if args.json:
        print(json.dumps(_jsonable(answer), indent=1))
        return EXIT_OK if answer.enhancements else EXIT_FAILED
    if not answer.enhancements:
        print(f"{answer.path}: {answer.note}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{answer.path} ({answer.kind})")
    if answer.note:
        print(f"  {answer.note}")
    for e in answer.enhancements:
        print(f"- enhancement #{e.id} of {e.target}  [{e.status}]{'  (current file)' if e.current else ''}")
        for r in e.references:
            print(f"    reference #{r.rank}: {r.path}  cosine {r.cosine:.3f}  relevance {r.relevance:.3f}")
        print(f"    model {e.model_name} ({e.model_sha256[:12]}) on {e.device}; run #{e.run_id} at {e.created_at}")
        if e.output_path:
            print(f"    output {e.output_path}")
        if e.error:
            print(f"    error {e.error}")
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    from flows.provenance import history

    settings = _settings(args)
    runs = history(settings, args.album, limit=args.limit)
    if args.json:
        print(json.dumps(_jsonable(runs), indent=1))
        return EXIT_OK
    if not runs:
        print("no runs yet")
        return EXIT_OK
    rows = []
    for r in runs:
        counts = r.counts or {}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v and not k.startswith("scan_"))
        rows.append([f"#{r.id}", r.kind, r.album or "-", r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                     f"{r.duration_s:.1f}s" if r.duration_s is not None else "-", r.status, shown or "-"])
    _print_table(rows, ["run", "kind", "album", "started (UTC)", "took", "status", "counts"])
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    from flows.enhancing import deployment

    settings = _settings(args)
    settings.check_model()
    if not PREFECT_API_URL.value():
        # The temporary API a plain `refsr enhance` uses runs no scheduler: nothing would ever start.
        print("refsr serve: schedules need a Prefect server. In another terminal run `prefect server start`, "
              "then `export PREFECT_API_URL=http://127.0.0.1:4200/api` and run this command again.",
              file=sys.stderr)
        return EXIT_USAGE
    served = deployment(args.album, settings, name=args.name, cron=args.cron, interval=args.interval)
    print(f"serving deployment {served.name!r} for {args.album} (Ctrl-C stops it)", file=sys.stderr)
    serve(served)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from flows import runtime

    settings = _settings(args)
    with runtime.database(settings.database_url)() as session:
        return int(args.handler(args, session))


_COMMANDS = {
    "index": _cmd_index, "enhance": _cmd_enhance, "sr": _cmd_sr, "which-ref": _cmd_which_ref,
    "history": _cmd_history, "serve": _cmd_serve, "report": _cmd_report,
}


class _Terminated(SystemExit):
    """SIGTERM, turned into an exception so that cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `refsr` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    # With Python's default SIGTERM action nothing is cleaned up: Prefect's engine records the
    # crash, then re-sends the signal to the previous handler, and the local Prefect server it
    # started lived on as an orphan. As an exception, exit handlers (which stop it) run.
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = None
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("refsr: interrupted", file=sys.stderr)
        return 130
    except _Terminated as exc:
        print("refsr: terminated; a run it had started is recorded as crashed, and the next run picks up "
              "where it stopped", file=sys.stderr)
        return int(exc.code)
    except BrokenPipeError:
        # The reader went away (`refsr history | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    except (ValueError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"refsr {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
