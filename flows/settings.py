"""Settings of one refsr invocation, built once from the command line and the environment."""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from db.engine import sqlite_file
from flows.options import (SPEED_ONLY, Affects, Group, as_is, number, number_in, one_of, option, optional,
                           positive_int, validated, values_from, whole, whole_number)
from pipeline.embedding.clip import WEIGHTS_ENV_VAR as CLIP_WEIGHTS_ENV
from pipeline.embedding.clip import ClipSettings
from pipeline.embedding.registry import EMBEDDERS, EmbedderKind, EmbedderSettings
from pipeline.params import EnhanceParams, RerankSettings, RetrievalSettings, VerifySettings
from pipeline.roles import RelativeRoles
from ttsr_core.config import SHIPPED_MODEL, Precision, SearchConfig, SearchMode

logger = logging.getLogger(__name__)

MODEL_ENV = "REFSR_MODEL"  # named in the missing-checkpoint message too
DEFAULT_OUT_NAME = "enhanced"  # inside the album; ScanSettings excludes it by default


class DeviceChoice(enum.StrEnum):
    """Where the texture transformer runs."""

    AUTO = "auto"  # CUDA when present, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class ModelNotFoundError(FileNotFoundError):
    """The TTSR checkpoint is not where the settings say; the message tells how to fix it."""


def _xdg_home(env: Mapping[str, str], given: Mapping[str, Any]) -> Path:
    """Without $REFSR_HOME: $XDG_DATA_HOME/refsr-album, else ~/.local/share/refsr-album."""
    xdg = env.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "refsr-album").resolve()


def check_precision_on(device: str, precision: Precision | None) -> None:
    """The one rule between device and autocast: float16 needs CUDA (checked as given, and once resolved)."""
    if device == "cpu" and precision is Precision.FLOAT16:
        raise ValueError("float16 autocast needs a CUDA device; on a CPU use bfloat16 or float32")


def _database_url(what: str, value: str) -> str:
    try:
        make_url(value)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise ValueError(f"{what} is not a SQLAlchemy URL: {value!r}") from exc
    return value


def _ratio(what: str, value: float) -> float:
    RelativeRoles(value)  # its own message names the rule
    return value


def _relevance(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be a number in [0, 1] (mean soft attention), got {value!r}")
    return float(value)


def _full_path(what: str, value: Path | str) -> Path:
    return Path(value).expanduser().resolve()


def _seconds(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return value


def _lease(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
        raise ValueError(f"{what} must be a number of seconds in (0, 86400), got {value!r}")
    return value


def _megabytes(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an int ≥ 0 (MB), got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a flow needs, resolved at the entry point (CLI or deployment) and passed down.

    Each field is one setting, declared once with its flag, environment variable, refsr.toml key,
    help, check and what it changes (flows/options.py). Precedence: command-line flag > environment
    variable > album's refsr.toml (scan thresholds only) > the defaults below.
    """

    # -- workspace ----------------------------------------------------------------------------
    home: Path = option(
        help="workspace folder (overrides $REFSR_HOME), e.g. --home /mnt/photos/refsr", flags=("--home",),
        group=Group.WORKSPACE, parse=Path,
        env="REFSR_HOME", env_parse=lambda text: Path(text).expanduser().resolve(), default_from=_xdg_home,
        env_help="workspace (database, FAISS files, caches, locks);\n"
                 "default $XDG_DATA_HOME/refsr-album or ~/.local/share/refsr-album",
        check=one_of(Path), affects=Affects.RUN | Affects.INDEX)
    database_url: str = option(
        help="database URL (overrides $REFSR_DATABASE_URL), e.g. --db postgresql+psycopg://user@host/refsr "
             "for several machines", flags=("--db",), group=Group.WORKSPACE, metavar="URL",
        env="REFSR_DATABASE_URL", default_from=lambda env, given: f"sqlite:///{Path(given['home']) / 'refsr.db'}",
        env_help="any SQLAlchemy URL; default sqlite:///$REFSR_HOME/refsr.db\n"
                 "(PostgreSQL for several machines: postgresql+psycopg://user@host/refsr)",
        check=_database_url, affects=Affects.RUN | Affects.INDEX | Affects.RESOURCES)
    # -- the model ------------------------------------------------------------------------------
    model_path: Path = option(
        help="TTSR checkpoint (.safetensors/.pt, ours or the authors'); default $REFSR_MODEL or the shipped "
             "models/ttsr-lite/ttsr-lite-x4.safetensors, trained for album photos (JPEG, noise, resized copies); "
             "for photos that were only downscaled, the clean one beside it (in a checkout: "
             "--model models/ttsr-lite/ttsr-lite-x4-clean.safetensors)",
        flags=("--model",), group=Group.MODEL, parse=Path, metavar="PATH",
        env=MODEL_ENV, env_help="TTSR checkpoint; default the compact model shipped in models/ttsr-lite/",
        default_from=lambda env, given: SHIPPED_MODEL, check=lambda what, value: Path(value).expanduser(),
        affects=Affects.RUN | Affects.RESOURCES)
    device: DeviceChoice = option(
        DeviceChoice.AUTO, help="auto = CUDA with mixed precision when present, else CPU (default auto)",
        flags=("--device",), group=Group.MODEL, choices=tuple(d.value for d in DeviceChoice), env="REFSR_DEVICE",
        env_help="auto | cpu | cuda", check=one_of(DeviceChoice),
        # The device decides the autocast when no precision is given: another device, another job key.
        affects=Affects.JOB_KEY | Affects.RUN | Affects.RESOURCES)
    # Autocast; None = the device's default (bf16, else fp16, on CUDA; float32 on CPU, where bf16 is an
    # opt-in worth taking only with native bf16: benchmarks/README.md, "bf16 autocast on this CPU").
    precision: Precision | None = option(
        None, help="autocast (default: bf16 or fp16 on CUDA, float32 on CPU). On a CPU with avx512_bf16 or AMX, "
                   "--precision bfloat16 ran 1.4-2.5x faster at -0.004 dB on the different-photo pairs; "
                   "without them it is far slower. float16 needs CUDA",
        flags=("--precision",), group=Group.MODEL, choices=tuple(p.value for p in Precision),
        env="REFSR_PRECISION", env_help="float32 | bfloat16 | float16; default: the device's (README, \"Speed\")",
        check=lambda what, value: Precision.parse(value, what),
        affects=Affects.JOB_KEY | Affects.RUN | Affects.RESOURCES)
    search: SearchMode = option(
        SearchMode.FAST, help="texture search: fast = coarse-to-fine (default when available), exact = the "
                              "paper's exhaustive search",
        flags=("--search",), group=Group.MODEL, choices=("fast", "exact"), check=one_of(SearchMode),
        affects=Affects.JOB_KEY | Affects.RUN)
    outscale: float = option(
        4.0, help="final scale; the model works at x4 and the result is resized (default 4), e.g. --outscale 2 "
                  "for twice the size",
        flags=("--outscale",), group=Group.MODEL, parse=number_in(0, 16), metavar="X", check=as_is,
        affects=Affects.JOB_KEY | Affects.RUN)
    output_format: str | None = option(
        None, help="output format (default: same as the input), e.g. --format png for lossless files. In an album, a "
                   "converted name that two photos would share keeps its old extension: a.jpg → a.jpg.png beside a.png",
        flags=("--format",), group=Group.MODEL, choices=("jpeg", "png", "webp", "tiff"), check=as_is,
        affects=Affects.JOB_KEY | Affects.RUN)
    tile: int | None = option(
        256, help="LR tile side for targets larger than that: bounded memory, blended overlapping tiles",
        check=optional(whole()), affects=Affects.JOB_KEY | Affects.RUN)
    # -- retrieval ------------------------------------------------------------------------------
    refs: int = option(
        1, help="references per target, best first (default 1), e.g. --refs 2 for texture from the two best photos",
        flags=("--refs",), group=Group.RETRIEVAL,
        parse=positive_int, metavar="N", check=whole(), affects=Affects.RUN)
    top_k: int = option(
        4, help="candidates of the verified ranking re-ranked by the model's own texture relevance (default 4; "
                "at least --refs)",
        flags=("--top-k",), group=Group.RETRIEVAL, parse=positive_int, metavar="K", check=whole(),
        affects=Affects.RUN)
    # Geometric verification of the best `verify_pool` cosine candidates (pipeline/matching/verification.py).
    verify_pool: int = option(
        24, help="cosine candidates checked by geometric verification (local features one homography explains), "
                 "so a photo of the same place wins over a look-alike (default 24: 3.5 s per target on a busy "
                 "2-core CPU, features cached per photo); fewer is faster, e.g. --verify-pool 8",
        flags=("--verify-pool",), group=Group.RETRIEVAL, parse=positive_int, metavar="N", check=whole(),
        affects=Affects.RUN)
    verify: bool = option(
        True, help="rank by cosine alone before the texture re-rank (the ranking before verification)",
        flags=("--no-verify",), group=Group.RETRIEVAL, action="store_false", check=as_is, affects=Affects.RUN)
    # The reference gate (pipeline.matching.retrieval.lends_texture); 0.75 lets no wrong reference of the
    # different-photograph yardstick through and keeps 27 of its 36 right ones (benchmarks/reference_gate.py).
    min_relevance: float = option(
        0.75, help="a reference that geometric verification does not vouch for lends texture only if the model's "
                   "relevance for it reaches R; otherwise the photo is enhanced from itself, which beats pasting "
                   "a wrong photo's texture (default 0.75; 0 = always use the best candidate)",
        flags=("--min-relevance",), group=Group.RETRIEVAL, parse=number, metavar="R", check=_relevance,
        affects=Affects.RUN)
    # A recorded copy of a larger album photo is restored from it (pipeline/matching/restore.py); the job key
    # tells a restoration apart by the original's hash, so only the run fingerprint changes here.
    restore: bool = option(
        True, help="enhance a copy of a larger album photo with the model like any target, instead of restoring it "
                   "from that original (see `refsr copies ALBUM`)",
        flags=("--no-restore",), group=Group.RETRIEVAL, action="store_false", check=as_is, affects=Affects.RUN)
    rerank_target_side: int = option(
        64, help="long side of the target when the model judges a candidate (pipeline.params.RerankSettings)",
        check=as_is, affects=Affects.RUN)
    rerank_candidate_side: int = option(
        256, help="long side of a candidate when the model judges it", check=as_is, affects=Affects.RUN)
    # -- album roles and indexing ---------------------------------------------------------------
    # Relative role rule (pipeline.roles); None: the album's refsr.toml, else DEFAULT_REF_RATIO
    # unless thresholds are given (flags or refsr.toml), which then decide roles instead.
    ref_ratio: float | None = option(
        None, help="relative rule: a reference is at least R times its target's long side (default 2, or "
                   "refsr.toml's [scan] ref_ratio), e.g. --ref-ratio 3 for only much larger references",
        flags=("--ref-ratio",), group=Group.SCAN, parse=number_in(1, 64), metavar="R", toml="scan.ref_ratio",
        check=optional(_ratio), affects=Affects.RUN)
    # Scan thresholds: None = the album's refsr.toml, else pipeline.scan's defaults.
    min_ref_side: int | None = option(
        None, help="fixed threshold: a photo whose long side is at least PX is a reference candidate, e.g. "
                   "--min-ref-side 1600 --max-target-side 800",
        flags=("--min-ref-side",), group=Group.SCAN, parse=positive_int, metavar="PX", toml="scan.min_ref_side",
        check=optional(whole()), affects=Affects.RUN)
    max_target_side: int | None = option(
        None, help="fixed threshold: a photo whose long side is at most PX is an enhancement target",
        flags=("--max-target-side",), group=Group.SCAN, parse=positive_int, metavar="PX",
        toml="scan.max_target_side", check=optional(whole()), affects=Affects.RUN)
    embedder: EmbedderKind = option(
        EmbedderKind.AUTO, help="auto = CLIP when its weights are on disk, else the built-in descriptor",
        flags=("--embedder",), group=Group.SCAN, choices=tuple(kind.value for kind in EMBEDDERS),
        check=one_of(EmbedderKind), affects=Affects.RUN | Affects.INDEX | Affects.RESOURCES)
    clip_weights: Path | None = option(
        None, help="open_clip weights (file or folder); none: the Hugging Face cache", env=CLIP_WEIGHTS_ENV,
        env_help="local open_clip weights; without them a built-in embedder is used",
        check=optional(lambda what, value: Path(value).expanduser()),
        affects=Affects.RUN | Affects.INDEX | Affects.RESOURCES)
    copies: bool = option(
        True, help="do not look for copies among the album's photos", flags=("--no-copies",),
        group=Group.INDEXING, action="store_false", check=as_is, affects=Affects.RUN)
    # -- the run --------------------------------------------------------------------------------
    out_dir: Path | None = option(
        None, help="output folder (mirrors the album's sub-folders); default ALBUM/enhanced, e.g. "
                   "--out ~/Pictures/enhanced", flags=("--out",),
        group=Group.OUTPUT, parse=Path, metavar="DIR",
        check=optional(lambda what, value: Path(value).expanduser().resolve()), affects=Affects.RUN)
    force: bool = option(
        False, help="redo enhancements even when already done", flags=("--force",), group=Group.RUN,
        action="store_true", check=as_is, affects=SPEED_ONLY)
    workers: int = option(
        2, help="photos in flight at once; the model itself runs one at a time per device (default 2); with "
                "--processes, the number of worker processes",
        flags=("--workers",), group=Group.RUN, parse=positive_int, metavar="N", check=whole(), affects=SPEED_ONLY)
    device_slots: int = option(
        1, help="model calls at once per device in one process", check=whole(), affects=Affects.RESOURCES)
    retries: int = option(
        2, help="retries of a task on a transient error (database busy, CUDA out of memory)", check=whole(0),
        affects=SPEED_ONLY)
    retry_delay_s: float = option(2.0, help="seconds between those retries", check=_seconds, affects=SPEED_ONLY)
    progress: bool = option(False, help="tqdm bars on stderr (the CLI turns them on)", check=as_is,
                            affects=SPEED_ONLY)
    report: bool = option(
        True, help="do not build the HTML gallery at the end", flags=("--no-report",), group=Group.REPORT,
        action="store_false", check=as_is, affects=Affects.RUN)
    # Provenance inside each output (pipeline/provenance/stamp.py): a signed C2PA manifest, an XMP packet, and the
    # photos' file names only when asked. No key given: refsr's local key, made in `home` on first use.
    credentials: bool = option(
        True, help="no C2PA manifest (the XMP marking stays unless --no-xmp)", flags=("--no-credentials",),
        group=Group.PROVENANCE, action="store_false", check=as_is, affects=Affects.RUN)
    xmp: bool = option(True, help="no XMP packet", flags=("--no-xmp",), group=Group.PROVENANCE,
                       action="store_false", check=as_is, affects=Affects.RUN)
    embed_names: bool = option(
        False, help="also write the target's and references' file names (never their folders)",
        flags=("--embed-names",), group=Group.PROVENANCE, action="store_true", check=as_is, affects=Affects.RUN)
    signing_key: Path | None = option(
        None, help="private key that signs the manifest (default $REFSR_SIGNING_KEY, else refsr's local key), "
                   "e.g. --signing-key me.key.pem --signing-cert me.chain.pem",
        flags=("--signing-key",), group=Group.PROVENANCE, parse=Path, metavar="PEM", env="REFSR_SIGNING_KEY",
        env_help="PEM private key that signs Content Credentials (as --signing-key)",
        check=optional(_full_path), affects=Affects.RUN)
    signing_cert: Path | None = option(
        None, help="its certificate chain, signer first (default $REFSR_SIGNING_CERT)", flags=("--signing-cert",),
        group=Group.PROVENANCE, parse=Path, metavar="PEM", env="REFSR_SIGNING_CERT",
        env_help="its PEM certificate chain, signer first (as --signing-cert)",
        check=optional(_full_path), affects=Affects.RUN)
    # -- task engine (flows/execution/runners.py): neither keeps Prefect's threads in this process ----------
    dask: str | None = option(
        None, help="run the photo tasks on the workers of this Dask scheduler, e.g. tcp://scheduler:8786 "
                   "(default $REFSR_DASK; with several machines use PostgreSQL and a shared album mount)",
        flags=("--dask",), group=Group.ENGINE, metavar="ADDRESS", env="REFSR_DASK",
        env_help="a Dask scheduler's address for the photo tasks (as --dask)", check=as_is, affects=Affects.RUN)
    processes: bool = option(
        False, help="run the photo tasks on a local Dask cluster of {workers} processes, each loading the model once",
        flags=("--processes",), group=Group.ENGINE, action="store_true", check=as_is, affects=Affects.RUN)
    # Job claims on a server database (flows/execution/locks.py): a holder's lease, renewed by a heartbeat every
    # third of it; a dead holder's job is taken over this long after its last renewal.
    claim_lease_s: float = option(
        60.0, help="on PostgreSQL, how long a dead process's job stays claimed (seconds)", env="REFSR_CLAIM_LEASE_S",
        parse=number, env_help="on PostgreSQL, how long a dead process's job stays claimed (default 60)",
        check=_lease, affects=Affects.RUN)
    claim_attempts: int = option(
        3, help="a job whose last N holders all died is not claimed again (it kills workers)", check=whole(),
        affects=Affects.RUN)
    # Encoded references kept per process for the next targets that use them (ttsr_core/model/reference_cache.py):
    # ~0.7 GB for the compact model and a 1920×1440 reference; 0 keeps none.
    reference_cache_mb: int = option(
        1024, help="memory per process for encoded references that later targets reuse (MB; 0 = none)",
        env="REFSR_REFERENCE_CACHE_MB", parse=whole_number,
        env_help="memory per process for encoded references that later targets\nreuse (default 1024; 0 = none)",
        check=_megabytes, affects=Affects.RUN | Affects.RESOURCES)

    def __post_init__(self) -> None:
        validated(self)
        check_precision_on(self.device, self.precision)
        if self.ref_ratio is not None and (self.min_ref_side is not None or self.max_target_side is not None):
            raise ValueError("give either --ref-ratio or the thresholds --min-ref-side/--max-target-side, "
                             f"not both (got ref_ratio={self.ref_ratio!r}, min_ref_side={self.min_ref_side!r}, "
                             f"max_target_side={self.max_target_side!r})")
        if self.refs > self.top_k:
            raise ValueError(f"Settings.refs ({self.refs!r}) cannot exceed top_k ({self.top_k!r})")
        if self.dask is not None and self.processes:
            raise ValueError(f"Settings: give a Dask scheduler address ({self.dask!r}) or a local cluster of "
                             "processes, not both")
        if (self.signing_key is None) != (self.signing_cert is None):
            raise ValueError(f"give both a signing key and its certificate chain, or neither (got key "
                             f"{self.signing_key!r}, certificate {self.signing_cert!r})")
        # Validated by the objects built from these values, so errors name the same fields. These copies are
        # thrown away: the run's EnhanceParams is built once its device is resolved (flows/enhancing.py), and
        # the precision, whose autocast that device decides, was checked above.
        self.retrieval()
        self.enhance_params()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Settings from keyword values (None means "not given"), else the environment, else the defaults."""
        return cls(**values_from(cls, given, os.environ if env is None else env))

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    # -- derived -------------------------------------------------------------------------------

    def search_config(self) -> SearchConfig:
        return SearchConfig(mode=self.search)

    def retrieval(self) -> RetrievalSettings:
        return RetrievalSettings(
            top_k=self.top_k,
            refs=self.refs,
            rerank=RerankSettings(
                target_side=self.rerank_target_side,
                candidate_side=self.rerank_candidate_side,
                search=self.search_config(),
            ),
            verify=VerifySettings(enabled=bool(self.verify), pool=self.verify_pool),
            min_relevance=self.min_relevance,
        )

    def embedder_settings(self) -> EmbedderSettings:
        """What the embedder factories need: CLIP's weights and device come from these settings only."""
        device = None if self.device is DeviceChoice.AUTO else self.device.value
        return EmbedderSettings(clip=ClipSettings(weights=self.clip_weights, device=device))

    def enhance_params(self, amp_dtype: Precision | None = None) -> EnhanceParams:
        """The pixel parameters of this invocation's jobs, in the autocast of the resolved device.

        `amp_dtype` comes from flows/resources.py `device_spec`: a run calls this once, after resolving the
        device, and passes the result down (the enhance flow in its JobContext, `refsr sr` to enhance_photo).
        """
        return EnhanceParams(
            outscale=float(self.outscale),
            search=self.search_config(),
            tile=self.tile,
            output_format=self.output_format,
            amp_dtype=amp_dtype,
        )

    @property
    def index_dir(self) -> Path:
        """FAISS files live beside the SQLite database (or in REFSR_HOME for a server database)."""
        db_file = sqlite_file(self.database_url)
        return db_file.parent / "faiss" if db_file is not None else self.home / "faiss"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    def check_model(self) -> Path:
        """The checkpoint path, or ModelNotFoundError saying where it was looked for and how to fix it."""
        path = self.model_path
        if path.is_file():
            return path
        if path.resolve() == SHIPPED_MODEL:
            raise ModelNotFoundError(
                f"TTSR checkpoint not found: {path}. That is where the project's trained compact model is "
                f"shipped, and this checkout lacks it; pass a checkpoint with --model PATH or ${MODEL_ENV} "
                "(a random-weight model is never substituted)."
            )
        raise ModelNotFoundError(
            f"TTSR checkpoint not found: {path} (given by --model or ${MODEL_ENV}); the shipped default is "
            f"{SHIPPED_MODEL}."
        )

    def stamp_options(self) -> dict[str, bool]:
        """What an output should carry besides pixels; a recorded output that carries otherwise is redone."""
        return {"credentials": self.credentials, "xmp": self.xmp, "embed_names": self.embed_names}

    def output_dir(self, album_root: Path) -> Path:
        return self.out_dir if self.out_dir is not None else Path(album_root) / DEFAULT_OUT_NAME

    def to_record(self) -> dict[str, Any]:
        """JSON-able form for a run's parameters."""
        data = asdict(self)
        return {
            k: v.value if isinstance(v, enum.Enum) else str(v) if isinstance(v, Path) else v for k, v in data.items()
        }


def index_file(settings: Settings, album_id: int, embedder_key: str) -> Path:
    """One FAISS file per album and embedder key, named readably and uniquely."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", embedder_key).strip("-")[:48]
    digest = hashlib.sha256(embedder_key.encode()).hexdigest()[:8]
    return settings.index_dir / f"album-{album_id}" / f"{slug}-{digest}.faiss"
