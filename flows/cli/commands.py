"""The `refsr` command: index and enhance albums, super-resolve one photo, answer provenance questions."""

from __future__ import annotations

import time

# The whole command's time, interpreter start and imports included: what `history` and the summary report.
_T0 = time.time()

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.cli.parser import build_parser
from flows.cli.output import jsonable as _jsonable
from flows.cli.runtime import configure_logging, end_at_exit, prefect_home, workspace_environment
from flows.cli.output import print_table as _print_table
from flows.cli.output import took
from flows.preflight import NoPhotosError, UsageError, shown

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130

# -- settings and environment ------------------------------------------------------------------


def _settings(args: argparse.Namespace, **extra: Any):  # type: ignore[no-untyped-def]
    """Settings from the flags this command offers (flows/cli/parser.py:add_settings), the environment and `extra`."""
    from flows.settings import Settings

    given = {name: getattr(args, name) for name in getattr(args, "settings_given", ())}
    try:
        settings = Settings.from_env(**given, **extra)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    workspace_environment(settings.home, verbose=args.verbose)
    _clock["database"] = settings.database_url
    return settings


def _check_signing(settings) -> None:  # type: ignore[no-untyped-def]
    """A signing key that cannot be read is a usage error before any work (and the local key is made now)."""
    from flows.targets.stamping import signing_identity

    try:
        signing_identity(settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _status(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def _say(text: str) -> None:
    """A line to stderr that is safe from a signal handler (no buffered stream that may be mid-write)."""
    os.write(sys.stderr.fileno(), (text + "\n").encode("utf-8", "replace"))


def _start_flow(args: argparse.Namespace) -> None:
    from flows.cli.prefect_server import die_with_this_process
    from flows.shortcut import prefect_server_configured

    prefect_home()
    _clock["working"] = True  # from here a fault ends a run that started: exit 1, not 2
    if not prefect_server_configured():
        die_with_this_process()
        _status(args, "refsr: starting Prefect's local server (a few seconds; set PREFECT_API_URL to use a running one)")


def _process_start() -> float:
    """When this process started (epoch seconds), from /proc where there is one; else when this module loaded."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return min(_T0, time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return _T0


_clock: dict[str, Any] = {"start": _T0}  # set by main(): the process's start for the console script, else the call's


def _started_at() -> datetime:
    return datetime.fromtimestamp(_clock["start"], UTC)


def _elapsed() -> float:
    return time.time() - _clock["start"]


# -- album commands ----------------------------------------------------------------------------


def _known(sessions, root: Path) -> dict[str, tuple[int, int, int | None, int | None]]:  # type: ignore[no-untyped-def]
    from db import queries

    with sessions() as session:
        album = queries.get_album(session, str(root))
        if album is None:
            return {}
        return {rel: (p.size_bytes or 0, p.mtime_ns or 0, p.width, p.height)
                for rel, p in queries.photos_by_rel_path(session, album.id).items()}


def _neither(sessions, root: Path) -> int:  # type: ignore[no-untyped-def]
    from db import queries
    from db.models import PhotoRole

    with sessions() as session:
        album = queries.get_album(session, str(root))
        return 0 if album is None else len(queries.photos(session, album.id, role=PhotoRole.neither))


def _shortcut(args: argparse.Namespace, settings, kind, found, digest: str):  # type: ignore[no-untyped-def]
    """The remembered summary when this run has nothing to do and may skip Prefect; else None."""
    from flows import shortcut
    from flows.resources import resources_for

    # No crash recovery here: a run left "running" by a dead process is the album's latest run,
    # which sends this one down the flow's path, and the flow recovers and reports it.
    if settings.force or shortcut.prefect_server_configured():
        return None
    return shortcut.remembered(resources_for(settings).sessions, found.root, kind, digest)


def _cmd_index(args: argparse.Namespace) -> int:
    from db.models import RunKind
    from flows import shortcut
    from flows.cli.output import as_unchanged_index, jsonable, print_index
    from flows.preflight import check_album_command
    from flows.resources import resources_for

    settings = _settings(args, progress=not args.no_progress and not args.json and sys.stderr.isatty())
    found = check_album_command(settings, args.album)
    digest = shortcut.fingerprint(RunKind.index, found, settings)
    sessions = resources_for(settings).sessions
    if (state := _shortcut(args, settings, RunKind.index, found, digest)) is not None:
        data = as_unchanged_index(state["summary"])
        counts = {**{k: data["scan"][k] for k in ("new", "changed", "unchanged", "unreadable", "gone", "targets",
                                                    "references")}, "embedded": 0, "embed_failed": 0}
        data["run_id"] = shortcut.record_shortcut(sessions, found.root, RunKind.index, settings, state, counts,
                                                  _started_at())
    else:
        ran: dict[str, int] = {}
        end_at_exit(sessions, ran)
        from flows.indexing import index_album

        _start_flow(args)
        summary = index_album(str(found.root), settings)
        if summary.run_id is not None:
            ran["id"] = summary.run_id
        data = {**jsonable(summary), "neither": _neither(sessions, found.root)}
        if summary.run_id is not None and not summary.embed_failures:  # a failed embedding is retried next time
            files = [summary.index.path] if summary.index else []
            shortcut.remember(sessions, summary.run_id, digest, data, files, _started_at())
    data["wall_s"] = round(_elapsed(), 3)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print_index(data)
    return EXIT_OK


def _cmd_enhance(args: argparse.Namespace) -> int:
    from db.models import RunKind
    from flows import shortcut
    from flows.cli.output import as_cached_enhance, enhance_counts, jsonable, print_enhance
    from flows.preflight import check_enhance_command, check_room, planned_bytes, target_sizes
    from flows.resources import resources_for

    settings = _settings(args, progress=not args.no_progress and not args.json and sys.stderr.isatty())
    found = check_enhance_command(settings, args.album)
    digest = shortcut.fingerprint(RunKind.enhance, found, settings, {"report": settings.report})
    index_digest = shortcut.fingerprint(RunKind.index, found, settings)
    sessions = resources_for(settings).sessions
    if (state := _shortcut(args, settings, RunKind.enhance, found, digest)) is not None:
        data = {**as_cached_enhance(state["summary"]), "recovered_runs": []}
        data["run_id"] = shortcut.record_shortcut(sessions, found.root, RunKind.enhance, settings, state,
                                                  enhance_counts(data), _started_at())
    else:
        # After the database answered (a damaged one is one line, no key made) and before any work.
        _check_signing(settings)
        ran: dict[str, int] = {}
        end_at_exit(sessions, ran)
        sizes = target_sizes(found, _known(sessions, found.root))
        # check_enhance_command made sure the folder is writable and not an input; now its room.
        check_room(settings.output_dir(found.root), planned_bytes(sizes, settings.outscale, settings.output_format))
        from flows.execution.runners import check_engine

        check_engine(settings)
        from flows.enhancing import enhance_album  # Prefect and torch: only once the checks passed

        from flows.execution import stopping
        from flows.execution.runners import StoppableThreadRunner

        flow = enhance_album.with_options(task_runner=StoppableThreadRunner(max_workers=settings.workers))
        with stopping.first_ctrl_c_stops(_say):
            _start_flow(args)
            summary = flow(str(found.root), settings)
        ran["id"] = summary.run_id
        data = {**jsonable(summary), "gallery": summary.gallery, "neither": _neither(sessions, found.root)}
        if summary.stopped:
            # The command leaves with os._exit (flows/execution/stopping.py), so no exit handler will move the
            # run's end: history gets the whole command's time here.
            from db import queries

            with sessions.begin() as session:
                queries.annotate_run(session, summary.run_id, started_at=_started_at(), ended_at=datetime.now(UTC))
        else:
            if not summary.failed:
                outputs = [Path(o.output_path) for o in summary.outcomes if o.output_path]
                files = outputs + ([Path(summary.gallery)] if summary.gallery else [])
                shortcut.remember(sessions, summary.run_id, digest, data, files, _started_at())
            if not summary.index.embed_failures:  # what `refsr index` would find next: nothing to do
                index_files = [summary.index.index.path] if summary.index.index else []
                shortcut.remember(sessions, summary.run_id, index_digest,
                                  {**data["index"], "neither": data["neither"]}, index_files, _started_at(),
                                  key=shortcut.state_key(RunKind.index, RunKind.enhance))
    data["wall_s"] = round(_elapsed(), 3)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print_enhance(data, wall_s=data["wall_s"])
    if data.get("stopped"):
        return EXIT_STOPPED
    return EXIT_FAILED if enhance_counts(data)["failed"] else EXIT_OK


def _cmd_sr(args: argparse.Namespace) -> int:
    from flows.preflight import check_device, check_model
    from flows.cli.sr_checks import check_sr_paths, small_references

    settings = _settings(args)
    check_sr_paths(args.lr, args.ref, args.out, args.attention)
    check_device(settings.device)
    check_model(settings)
    for warning in small_references(args.lr, args.ref):
        if not args.quiet:
            print(f"refsr sr: warning: {warning}", file=sys.stderr)
    from flows.resources import resources_for
    from pipeline.enhance import enhance_photo

    res = resources_for(settings)
    ckpt = res.model()
    params = settings.enhance_params(res.device.amp_dtype)  # once, as the enhance flow's job context does
    result = enhance_photo(ckpt.model, args.lr, args.ref, args.out, params, attention_path=args.attention,
                           device=res.device.name)
    print(f"{shown(result.output_path)}  {result.width}x{result.height} {result.format}  "
          f"sr {result.timings['sr_s']:.1f}s on {result.device}  "
          f"(model {shown(settings.model_path.name)} ({ckpt.sha256[:12]}))")
    return EXIT_OK


def _cmd_which_ref(args: argparse.Namespace) -> int:
    from flows.cli.provenance import cmd_which_ref

    return cmd_which_ref(args, _settings)


def _cmd_verify(args: argparse.Namespace) -> int:
    from flows.cli.provenance import cmd_verify

    return cmd_verify(args)


def _cmd_copies(args: argparse.Namespace) -> int:
    from flows.provenance import album_copies

    settings = _settings(args)
    found = album_copies(settings, args.album)
    if found is None:
        raise UsageError(f"{shown(args.album)} has not been indexed: run `refsr index {shown(args.album)}` first")
    if args.json:
        print(json.dumps(_jsonable(found), indent=1))
        return EXIT_OK
    if not found:
        print("no copies found among the album's photos")
        return EXIT_OK
    rows = [[c.copy, c.original, f"x{c.scale:.2f}" if c.scale else "-", str(c.inliers),
             f"{c.agreement_db:.1f} dB" if c.agreement_db is not None else "-"] for c in found]
    _print_table(rows, ["copy", "original", "scale", "inliers", "agreement"])
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
        counted = ", ".join(f"{k} {v}" for k, v in counts.items() if v and not k.startswith("scan_"))
        rows.append([f"#{r.id}", r.kind, r.album or "-", r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                     took(r.status, r.duration_s), r.status, counted or "-"])
    _print_table(rows, ["run", "kind", "album", "started (UTC)", "took", "status", "counts"])
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from flows.preflight import check_enhance_command

    settings = _settings(args)  # before Prefect is imported: it reads PREFECT_HOME at import
    _check_signing(settings)
    check_enhance_command(settings, args.album)
    prefect_home()
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    from flows.enhancing import deployment

    if not PREFECT_API_URL.value():
        # The temporary API a plain `refsr enhance` uses runs no scheduler: nothing would ever start.
        print("refsr serve: schedules need a Prefect server. In another terminal run `prefect server start`, "
              "then `export PREFECT_API_URL=http://127.0.0.1:4200/api` and run this command again.",
              file=sys.stderr)
        return EXIT_USAGE
    if args.pool:
        from flows.deploying import deploy_to_pool
        from flows.execution.runners import check_engine

        check_engine(settings)
        name = deploy_to_pool(args.album, settings, args.pool, name=args.name, cron=args.cron,
                              interval=args.interval)
        print(f"deployment {name!r} is on work pool {args.pool!r}; on each machine run "
              f"`prefect worker start --pool {args.pool}`")
        return EXIT_OK
    served = deployment(args.album, settings, name=args.name, cron=args.cron, interval=args.interval)
    print(f"serving deployment {served.name!r} for {shown(args.album)} (Ctrl-C stops it)", file=sys.stderr)
    serve(served)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from flows.resources import resources_for

    settings = _settings(args)
    args.home_resolved = settings.home
    with resources_for(settings).sessions() as session:
        return int(args.handler(args, session))


_COMMANDS = {
    "index": _cmd_index, "enhance": _cmd_enhance, "sr": _cmd_sr, "which-ref": _cmd_which_ref,
    "copies": _cmd_copies, "history": _cmd_history, "serve": _cmd_serve, "report": _cmd_report,
    "verify": _cmd_verify,
}


class _Terminated(SystemExit):
    """SIGTERM, turned into an exception so that cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `refsr` console script; returns the exit status."""
    # The console script passes no argv: its time starts with the interpreter. Embedded calls start now.
    _clock.clear()
    _clock["start"] = _process_start() if argv is None else time.time()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    # With Python's default SIGTERM action nothing is cleaned up: Prefect's engine records the
    # crash, then re-sends the signal to the previous handler, and the local Prefect server it
    # started lived on as an orphan. As an exception, exit handlers (which stop it) run.
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = None
    from flows.execution import stopping

    stopping.reset()
    try:
        code = _COMMANDS[args.command](args)
        if stopping.requested() and argv is None:
            # Stopped by Ctrl-C, summary printed and run recorded: leave now. A photo the run gave up
            # on may still run in a thread that a normal exit would join, and Prefect's exit handlers
            # would stop its server politely (seconds); it gets SIGTERM as this process dies.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
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
    except NoPhotosError as exc:
        print(f"refsr {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, FileNotFoundError) as exc:  # a bad checkpoint too: ttsr_core's CheckpointError is one
        if args.verbose:
            raise
        print(f"refsr {args.command}: {shown(' '.join(str(exc).split()))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from flows.cli.db_faults import database_error, explain

        if args.verbose or (fault := database_error(exc)) is None:
            raise
        print(f"refsr {args.command}: {explain(fault, _clock.get('database'))}", file=sys.stderr)
        return EXIT_FAILED if _clock.get("working") else EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
