"""The `refsr` command line: every subcommand, its options and the help that teaches them (no work done here)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import textwrap
from pathlib import Path
from typing import NoReturn

from pipeline.embedders import EMBEDDERS

_COMMON_EPILOG = """\
environment:
  REFSR_HOME          workspace (database, FAISS files, caches, locks);
                      default $XDG_DATA_HOME/refsr-album or ~/.local/share/refsr-album
  REFSR_DATABASE_URL  any SQLAlchemy URL; default sqlite:///$REFSR_HOME/refsr.db
                      (PostgreSQL for several machines: postgresql+psycopg://user@host/refsr)
  REFSR_MODEL         TTSR checkpoint; default the compact model shipped in models/ttsr-lite/
  REFSR_DEVICE        auto | cpu | cuda
  REFSR_CLIP_WEIGHTS  local open_clip weights; without them a built-in embedder is used
  PREFECT_API_URL     a Prefect server of yours (every run shows there); unset, a temporary
                      local server starts when there is work, its state in $REFSR_HOME/prefect
  DO_NOT_TRACK        telemetry is off unless you set this (or Prefect's own settings) otherwise
  REFSR_DASK          a Dask scheduler's address for the photo tasks (as --dask)
  REFSR_CLAIM_LEASE_S on PostgreSQL, how long a dead process's job stays claimed (default 60)
  REFSR_REFERENCE_CACHE_MB  memory per process for encoded references that later targets
                      reuse (default 1024; 0 = none)
"""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line (the bad value and where to read more), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


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


def _number_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number in the half-open range (low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"expected a number in ({low:g}, {high:g}], got {text!r}")
        return value
    return parse


_positive_float = _number_in(0, 16)


def _workspace_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workspace")
    g.add_argument("--home", type=Path, default=None, help="workspace folder (overrides $REFSR_HOME)")
    g.add_argument("--db", dest="database_url", default=None, metavar="URL",
                   help="database URL (overrides $REFSR_DATABASE_URL)")


_ratio = _number_in(1, 64)


_ROLES = """\
A photo lends texture to a target when its long side is at least --ref-ratio times the target's
(default 2: the output is x4, and a reference twice the target's size still holds detail at half
the output's scale or finer; a photo of about the same size lends nothing bicubic would not). A
photo with a photo that many times larger in the album is a target, a photo that many times
larger than another is a reference. Fixed thresholds (--min-ref-side/--max-target-side, or
[scan] in the album's refsr.toml) replace the rule when given."""


def _scan_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("album roles", _ROLES)
    g.add_argument("--ref-ratio", type=_ratio, default=None, metavar="R",
                   help="relative rule: a reference is at least R times its target's long side (default 2, "
                        "or refsr.toml's [scan] ref_ratio)")
    g.add_argument("--min-ref-side", type=_positive_int, default=None, metavar="PX",
                   help="fixed threshold: a photo whose long side is at least PX is a reference candidate")
    g.add_argument("--max-target-side", type=_positive_int, default=None, metavar="PX",
                   help="fixed threshold: a photo whose long side is at most PX is an enhancement target")
    g.add_argument("--embedder", choices=[kind.value for kind in EMBEDDERS], default=None,
                   help="auto = CLIP when its weights are on disk, else the built-in descriptor")


def _model_args(p: argparse.ArgumentParser, *, album: bool) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="TTSR checkpoint (.safetensors/.pt, ours or the authors'); default $REFSR_MODEL or "
                        "the shipped models/ttsr-lite/ttsr-lite-x4.safetensors, trained for album photos (JPEG, "
                        "noise, resized copies); ttsr-lite-x4-clean.safetensors beside it suits photos that were "
                        "only downscaled")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="auto = CUDA with mixed precision when present, else CPU (default auto)")
    g.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default=None,
                   help="autocast (default: bf16 or fp16 on CUDA, float32 on CPU). bfloat16 on a CPU with "
                        "avx512_bf16 or AMX ran 1.4-2.5x faster for the same Y-PSNR on the validation pairs, "
                        "single pixels differing; without them it is far slower. float16 needs CUDA")
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
                       help="candidates of the verified ranking re-ranked by the model's own texture relevance "
                            "(default 4)")
        g.add_argument("--verify-pool", type=_positive_int, default=None, metavar="N",
                       help="cosine candidates checked by geometric verification: local features matched and "
                            "counted where one homography explains them, so a photo of the same place wins over "
                            "a look-alike (default 24; 3.5 s per target on a busy 2-core CPU, each photo's features "
                            "computed once and cached)")
        g.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                       help="rank by cosine alone before the texture re-rank (the ranking before verification)")
        g.add_argument("--no-restore", dest="restore", action="store_false", default=None,
                       help="enhance a copy of a larger album photo with the model like any target, instead of "
                            "restoring it from that original (see `refsr copies ALBUM`)")


def _provenance_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "provenance in the file",
        "Every output carries what made it: an XMP packet (target and reference hashes, scores, model, run,\n"
        "IPTC digital source type) and a signed C2PA manifest (Content Credentials) with the photos as\n"
        "ingredients by hash and thumbnail. Without --signing-key, refsr signs with a local key it makes in\n"
        "REFSR_HOME: that proves integrity (the file is unchanged), not identity. No paths or user names.")
    g.add_argument("--no-credentials", dest="credentials", action="store_false", default=None,
                   help="no C2PA manifest (the XMP marking stays unless --no-xmp)")
    g.add_argument("--no-xmp", dest="xmp", action="store_false", default=None, help="no XMP packet")
    g.add_argument("--embed-names", action="store_true", default=None,
                   help="also write the target's and references' file names (never their folders)")
    g.add_argument("--signing-key", type=Path, default=None, metavar="PEM",
                   help="private key that signs the manifest (default $REFSR_SIGNING_KEY, else refsr's local key)")
    g.add_argument("--signing-cert", type=Path, default=None, metavar="PEM",
                   help="its certificate chain, signer first (default $REFSR_SIGNING_CERT)")


def _engine_args(p: argparse.ArgumentParser, *, workers: bool = True) -> None:
    g = p.add_argument_group("task engine (needs the [dask] extra: pip install 'refsr-album[dask]')")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--dask", default=None, metavar="ADDRESS",
                     help="run the photo tasks on the workers of this Dask scheduler, e.g. tcp://scheduler:8786 "
                          "(default $REFSR_DASK; with several machines use PostgreSQL and a shared album mount)")
    # Only where --workers exists does the help name it (serve has none: its cluster has the default size).
    size = "--workers processes" if workers else "2 worker processes"
    how.add_argument("--processes", action="store_true", default=None,
                     help=f"run the photo tasks on a local Dask cluster of {size}, each loading the model once")


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
               "  refsr which-ref examples/album/enhanced/<photo>\n  refsr history\n\n" + _COMMON_EPILOG,
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true",
                       help="show Prefect's and refsr's own logs, and tracebacks of errors")
    noise.add_argument("-q", "--quiet", action="store_true", help="no warnings or status lines; errors and results only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "index", formatter_class=_Formatter, help="scan an album and update its photo index",
        description=textwrap.dedent("""\
            Scan ALBUM recursively, hash new and changed photos, decide each photo's role by its size
            (target to enhance, or reference to lend texture), embed it, and update the album's vector
            index. Incremental: unchanged files (same size and mtime) are not opened, so a second run
            on an unchanged album reads no pixels. Each photo is also checked against its nearest
            neighbours for copies (smaller, recompressed, cropped or colour-edited versions of another
            album photo): the summary names them, `refsr copies ALBUM` lists them.
            """),
        epilog="examples:\n  refsr index ~/Pictures/2019\n  refsr index examples/album --json\n"
               "  refsr index ~/Pictures --min-ref-side 1200 --max-target-side 800\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder")
    _scan_args(p)
    _workspace_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-copies", dest="copies", action="store_false", default=None,
                   help="do not look for copies among the album's photos")

    p = sub.add_parser(
        "enhance", formatter_class=_Formatter, help="enhance every target photo of an album",
        description=textwrap.dedent("""\
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
        epilog="examples:\n  refsr enhance examples/album\n"
               "  refsr enhance ~/Pictures/2019 --out ~/Pictures/2019-enhanced --refs 2 --top-k 8\n"
               "  refsr enhance ~/Pictures/2019 --device cuda --outscale 2 --format png\n"
               "  refsr enhance ~/Pictures/2019 --force      # redo everything\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (mirrors the album's sub-folders); default ALBUM/enhanced")
    _model_args(p, album=True)
    p.add_argument("--force", action="store_true", help="redo enhancements even when already done")
    _provenance_args(p)
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="photos in flight at once; the model itself runs one at a time per device (default 2); "
                        "with --processes, the number of worker processes")
    _engine_args(p)
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
    p.add_argument("--attention", type=Path, default=None, metavar="NPZ",
                   help="also save the attention maps here (an .npz archive: soft, hard, ref_grids)")
    _model_args(p, album=False)

    p = sub.add_parser(
        "which-ref", formatter_class=_Formatter, help="which reference produced an output (or a target's history)",
        description="PATH is an enhanced output or an album photo. For an output: the reference(s) that lent "
                    "it texture, their scores, the model, the run and when. For a target: every enhancement "
                    "it has had, newest first. An output the database does not know (a copy on another machine, "
                    "a fresh REFSR_HOME) answers from the provenance it carries (its signed manifest, else its "
                    "XMP), by content hash; when both know it, a disagreement between file and database is said.",
        epilog="examples:\n  refsr which-ref examples/album/enhanced/leuven/from-chat/leuvenA-small.jpg\n"
               "  refsr which-ref examples/album/leuven/from-chat/leuvenA-small.jpg --json\n\n" + _COMMON_EPILOG)
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _workspace_args(p)

    from flows.cli_provenance import add_verify_parser

    add_verify_parser(sub, _Formatter)

    p = sub.add_parser(
        "copies", formatter_class=_Formatter, help="which album photos are copies of which",
        description="The copies `refsr index` found in ALBUM: a photo that is a smaller, recompressed, cropped "
                    "or colour-edited version of another album photo, with its original, the scale between "
                    "them, the feature matches one similarity explains and how well the aligned pixels agree "
                    "(PSNR after a colour fit). Reads the database only.",
        epilog="examples:\n  refsr copies ~/Pictures/2019\n  refsr copies examples/album --json\n\n" + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM", help="album folder (indexed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _workspace_args(p)

    p = sub.add_parser(
        "history", formatter_class=_Formatter, help="past runs with their counts and status",
        description="Runs newest first: kind, album, start, duration, status and counts. A run stopped by "
                    "Ctrl-C is 'stopped', with the counts of what it did. Runs whose process "
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
               "  refsr serve ~/Pictures --cron '0 3 * * *' --device cuda\n"
               "  refsr serve /mnt/album --cron '0 3 * * *' --pool refsr --dask tcp://scheduler:8786\n\n"
               + _COMMON_EPILOG)
    p.add_argument("album", type=Path, metavar="ALBUM")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="cron schedule, e.g. '0 3 * * *'")
    when.add_argument("--interval", type=_positive_int, metavar="SECONDS", help="run every SECONDS")
    p.add_argument("--name", default=None, help="deployment name (default refsr-<album folder name>)")
    p.add_argument("--pool", default=None, metavar="NAME",
                   help="put the deployment on this work pool and return, instead of serving it here: "
                        "`prefect worker start --pool NAME` on any machine then runs it (create the pool once "
                        "with `prefect work-pool create NAME --type process`)")
    _engine_args(p, workers=False)
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder; default ALBUM/enhanced")
    _model_args(p, album=True)
    _provenance_args(p)
    _scan_args(p)
    _workspace_args(p)
    from flows.report import add_report_parser

    _workspace_args(add_report_parser(sub))
    for command in sub.choices.values():
        # Also after the command (`refsr enhance ALBUM -q`); SUPPRESS keeps a value given before it.
        noise = command.add_mutually_exclusive_group()
        noise.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        noise.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser
