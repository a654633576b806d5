"""The `refsr` command: index and enhance albums, super-resolve one photo, answer provenance questions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.cli_parser import build_parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

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
        workers=get("workers"), dask=get("dask"), processes=get("processes"), **extra,
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

    from flows.runners import check_engine

    check_engine(settings)
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
    from flows.resources import resources_for
    from flows.settings import ModelNotFoundError
    from pipeline.enhance import enhance_photo

    settings = _settings(args)
    try:
        settings.check_model()
    except ModelNotFoundError as exc:
        print(f"refsr sr: {exc}", file=sys.stderr)
        return EXIT_USAGE
    res = resources_for(settings)
    ckpt = res.model()
    result = enhance_photo(ckpt.model, args.lr, args.ref, args.out, settings.enhance_params(res.device.amp_dtype),
                           attention_path=args.attention, device=res.device.name)
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
    if args.pool:
        from flows.deploying import deploy_to_pool
        from flows.runners import check_engine

        check_engine(settings)
        name = deploy_to_pool(args.album, settings, args.pool, name=args.name, cron=args.cron,
                              interval=args.interval)
        print(f"deployment {name!r} is on work pool {args.pool!r}; on each machine run "
              f"`prefect worker start --pool {args.pool}`")
        return EXIT_OK
    served = deployment(args.album, settings, name=args.name, cron=args.cron, interval=args.interval)
    print(f"serving deployment {served.name!r} for {args.album} (Ctrl-C stops it)", file=sys.stderr)
    serve(served)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from flows.resources import resources_for

    settings = _settings(args)
    with resources_for(settings).sessions() as session:
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
