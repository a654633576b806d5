"""The `refsr` command line: every subcommand, its options and the help that teaches them (no work done here)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from flows.options import Group, declared, positive_int
from flows.settings import Settings


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line (the bad value and where to read more), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions and examples; defaults are stated in each help text."""


_ROLES = """\
A photo lends texture to a target when its long side is at least --ref-ratio times the target's
(default 2: the output is x4, and a reference twice the target's size still holds detail at half
the output's scale or finer; a photo of about the same size lends nothing bicubic would not). A
photo with a photo that many times larger in the album is a target, a photo that many times
larger than another is a reference. Fixed thresholds (--min-ref-side/--max-target-side, or
[scan] in the album's refsr.toml) replace the rule when given."""

_PROVENANCE = """\
Every output carries what made it: an XMP packet (target and reference hashes, scores, model, run,
IPTC digital source type) and a signed C2PA manifest (Content Credentials) with the photos as
ingredients by hash and thumbnail. Without --signing-key, refsr signs with a local key it makes in
REFSR_HOME: that proves integrity (the file is unchanged), not identity. No paths or user names."""

# Each group's title and text in the help; None: among the command's own options.
_GROUPS: dict[Group, tuple[str, str | None] | None] = {
    Group.WORKSPACE: ("workspace", None),
    Group.SCAN: ("album roles", _ROLES),
    Group.MODEL: ("model", None),
    Group.RETRIEVAL: ("model", None),
    Group.OUTPUT: None, Group.RUN: None, Group.INDEXING: None, Group.REPORT: None,
    Group.PROVENANCE: ("provenance in the file", _PROVENANCE),
    Group.ENGINE: ("task engine (needs the [dask] extra: pip install 'refsr-album[dask]')", None),
}


_PREFECT_ENVIRONMENT = """\
  PREFECT_API_URL     a Prefect server of yours (every run shows there); unset, a temporary
                      local server starts when there is work, its state in $REFSR_HOME/prefect
  DO_NOT_TRACK        telemetry is off unless you set this (or Prefect's own settings) otherwise
"""


def _environment() -> str:
    """The epilog's list of environment variables: every setting's, then Prefect's."""
    lines = ["environment:"]
    for d in declared(Settings):
        if d.option.env is not None and d.option.env_help is not None:
            first, *more = d.option.env_help.split("\n")
            name = f"{d.option.env:<19} " if len(d.option.env) < 20 else f"{d.option.env}  "
            lines += [f"  {name}{first}", *(" " * 22 + line for line in more)]
    return "\n".join(lines) + "\n" + _PREFECT_ENVIRONMENT


class _Mention(dict):  # type: ignore[type-arg]
    """A help text's {setting}: its flag where the command offers it, else its default."""

    def __init__(self, offered: set[str]) -> None:
        super().__init__()
        self.offered = offered

    def __missing__(self, name: str) -> str:
        d = next(d for d in declared(Settings) if d.name == name)
        return d.option.flags[0] if name in self.offered else str(d.default)


def add_settings(p: argparse.ArgumentParser, *groups: Group) -> None:
    """The flags of every setting in `groups`, in the table's order, under the groups' headings.

    Each flag's value lands under the setting's name, None when not given; `args.settings_given`
    names the settings this command offers, which the CLI passes to Settings.from_env.
    """
    table = [d for d in declared(Settings) if d.option.flags and d.option.group in groups]
    table.sort(key=lambda d: groups.index(d.option.group))  # type: ignore[arg-type]
    mention = _Mention({d.name for d in table})
    headings: dict[object, Any] = {}
    for d in table:
        text = _GROUPS[d.option.group]  # type: ignore[index]
        if text not in headings:
            where: Any = p if text is None else p.add_argument_group(*text)
            headings[text] = where.add_mutually_exclusive_group() if d.option.group is Group.ENGINE else where
        extra: dict[str, Any] = {"action": d.option.action} if d.option.action else {
            "type": d.option.parse, "metavar": d.option.metavar, "choices": d.option.choices}
        headings[text].add_argument(*d.option.flags, dest=d.name, default=None,
                                    help=d.option.help.format_map(mention), **extra)
    p.set_defaults(settings_given=(*(p.get_default("settings_given") or ()), *(d.name for d in table)))


def _command(sub: Any, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """One subcommand whose help ends with its examples and the environment it reads."""
    return sub.add_parser(name, formatter_class=_Formatter, help=help, description=description,
                          epilog=f"examples:\n{examples}\n" + _environment())


def _index(sub: Any) -> None:
    p = _command(
        sub, "index", "scan an album and update its photo index", textwrap.dedent("""\
            Scan ALBUM recursively, hash new and changed photos, decide each photo's role by its size
            (target to enhance, or reference to lend texture), embed it, and update the album's vector
            index. Incremental: unchanged files (same size and mtime) are not opened, so a second run
            on an unchanged album reads no pixels. Each photo is also checked against its nearest
            neighbours for copies (smaller, recompressed, cropped or colour-edited versions of another
            album photo): the summary names them, `refsr copies ALBUM` lists them.
            """),
        "  refsr index ~/Pictures/2019\n  refsr index examples/album --json\n"
        "  refsr index ~/Pictures --min-ref-side 1200 --max-target-side 800\n")
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder")
    add_settings(p, Group.SCAN, Group.WORKSPACE)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings(p, Group.INDEXING)


def _enhance(sub: Any) -> None:
    p = _command(
        sub, "enhance", "enhance every target photo of an album", textwrap.dedent("""\
            Index ALBUM (incrementally), then for every target photo: find reference candidates by
            embedding similarity, re-rank them by the texture model's own relevance, and write a x4
            enhancement to the mirrored path under --out, keeping EXIF and colour profile. A photo
            whose job (photo, references, model, settings) already succeeded is not redone; a new
            photo, a better reference or another model produces a new record beside the old one.
            Exit status 1 when any photo failed (each failure is recorded with its reason).
            Ctrl-C: no new photo starts, the one in progress gets 2 s to finish or is dropped, the
            summary prints what was done and the run is recorded as stopped (exit 130); a second
            Ctrl-C exits at once. Nothing is ever half-written.
            """),
        "  refsr enhance examples/album\n"
        "  refsr enhance ~/Pictures/2019 --out ~/Pictures/2019-enhanced --refs 2 --top-k 8\n"
        "  refsr enhance ~/Pictures/2019 --device cuda --outscale 2 --format png\n"
        "  refsr enhance ~/Pictures/2019 --force      # redo everything\n")
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder")
    add_settings(p, Group.OUTPUT, Group.MODEL, Group.RETRIEVAL, Group.RUN, Group.PROVENANCE, Group.ENGINE,
                 Group.SCAN, Group.WORKSPACE)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings(p, Group.REPORT)


def _sr(sub: Any) -> None:
    p = _command(
        sub, "sr", "enhance one photo with references you choose (no database)",
        "Super-resolve LR x4 with one or more reference photos, best first. Nothing is indexed "
        "or recorded; the soft-attention map can be saved with --attention.",
        "  refsr sr small.jpg --ref big.jpg --out small_x4.jpg\n"
        "  refsr sr small.jpg --ref a.jpg --ref b.jpg --out out.png --outscale 2\n")
    p.add_argument("lr", type=Path, metavar="LR", help="the photo to enhance")
    p.add_argument("--ref", type=Path, action="append", required=True, metavar="REF",
                   help="a reference photo (repeat for several)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT", help="output file (format from extension)")
    p.add_argument("--attention", type=Path, default=None, metavar="NPZ",
                   help="also save the attention maps here (an .npz archive: soft, hard, ref_grids)")
    add_settings(p, Group.MODEL)


def _which_ref(sub: Any) -> None:
    p = _command(
        sub, "which-ref", "which reference produced an output (or a target's history)",
        "PATH is an enhanced output or an album photo. For an output: the reference(s) that lent "
        "it texture, their scores, the model, the run and when. For a target: every enhancement "
        "it has had, newest first. An output the database does not know (a copy on another machine, "
        "a fresh REFSR_HOME) answers from the provenance it carries (its signed manifest, else its "
        "XMP), by content hash; when both know it, a disagreement between file and database is said.",
        "  refsr which-ref examples/album/enhanced/leuven/from-chat/leuvenA-small.jpg\n"
        "  refsr which-ref examples/album/leuven/from-chat/leuvenA-small.jpg --json\n")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_settings(p, Group.WORKSPACE)


def _copies(sub: Any) -> None:
    p = _command(
        sub, "copies", "which album photos are copies of which",
        "The copies `refsr index` found in ALBUM: a photo that is a smaller, recompressed, cropped "
        "or colour-edited version of another album photo, with its original, the scale between "
        "them, the feature matches one similarity explains and how well the aligned pixels agree "
        "(PSNR after a colour fit). Reads the database only.",
        "  refsr copies ~/Pictures/2019\n  refsr copies examples/album --json\n")
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder (indexed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_settings(p, Group.WORKSPACE)


def _history(sub: Any) -> None:
    p = _command(
        sub, "history", "past runs with their counts and status",
        "Runs newest first: kind, album, start, duration, status and counts. A run stopped by "
        "Ctrl-C is 'stopped', with the counts of what it did. Runs whose process "
        "died are shown as crashed once any later refsr command starts.",
        "  refsr history\n  refsr history examples/album --json\n")
    p.add_argument("album", type=Path, nargs="?", default=None, metavar="ALBUM", help="only this album")
    p.add_argument("--limit", type=positive_int, default=20, help="show at most this many runs (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_settings(p, Group.WORKSPACE)


def _serve(sub: Any) -> None:
    p = _command(
        sub, "serve", "enhance an album on a schedule (Prefect deployment)", textwrap.dedent("""\
            Serve the enhance flow for ALBUM as a Prefect deployment with a schedule; runs until
            stopped (Ctrl-C). Each scheduled run is incremental: only new photos cost model work.
            Start `prefect server start` first and set PREFECT_API_URL=http://127.0.0.1:4200/api to see
            runs in the UI. Workers on other machines can take the same flow from a work pool
            (`prefect worker start --pool refsr`) when they share REFSR_DATABASE_URL (PostgreSQL)
            and see the album at the same path.
            """),
        "  refsr serve ~/Pictures --interval 3600\n"
        "  refsr serve ~/Pictures --cron '0 3 * * *' --device cuda\n"
        "  refsr serve /mnt/album --cron '0 3 * * *' --pool refsr --dask tcp://scheduler:8786\n")
    p.add_argument("album", type=Path, metavar="ALBUM")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="cron schedule, e.g. '0 3 * * *'")
    when.add_argument("--interval", type=positive_int, metavar="SECONDS", help="run every SECONDS")
    p.add_argument("--name", default=None, help="deployment name (default refsr-<album folder name>)")
    p.add_argument("--pool", default=None, metavar="NAME",
                   help="put the deployment on this work pool and return, instead of serving it here: "
                        "`prefect worker start --pool NAME` on any machine then runs it (create the pool once "
                        "with `prefect work-pool create NAME --type process`)")
    add_settings(p, Group.ENGINE, Group.OUTPUT, Group.MODEL, Group.RETRIEVAL, Group.PROVENANCE, Group.SCAN,
                 Group.WORKSPACE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="refsr",
        formatter_class=_Formatter,
        description=textwrap.dedent("""\
            Reference-based super-resolution for photo albums.

            Small photos in an album are enlarged x4 by the texture transformer (TTSR), which copies
            real detail from the best matching large photo of the same album. Every output remembers
            which photo lent it texture.
            """),
        epilog="first steps:\n  refsr enhance examples/album      # index + enhance the sample album\n"
               "  refsr which-ref examples/album/enhanced/<photo>\n  refsr history\n\n" + _environment(),
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true",
                       help="show Prefect's and refsr's own logs, and tracebacks of errors")
    noise.add_argument("-q", "--quiet", action="store_true", help="no warnings or status lines; errors and results only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_index, _enhance, _sr, _which_ref):
        add(sub)
    from flows.cli.provenance import add_verify_parser

    add_verify_parser(sub, _Formatter)
    for add in (_copies, _history, _serve):
        add(sub)
    from flows.report import add_report_parser

    add_settings(add_report_parser(sub), Group.WORKSPACE)
    for command in sub.choices.values():
        # Also after the command (`refsr enhance ALBUM -q`); SUPPRESS keeps a value given before it.
        noise = command.add_mutually_exclusive_group()
        noise.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        noise.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser
