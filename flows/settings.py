"""Settings of one refsr invocation, built once from the command line and the environment."""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from db.engine import sqlite_file
from pipeline.clip_embedder import WEIGHTS_ENV_VAR as CLIP_WEIGHTS_ENV
from pipeline.clip_embedder import ClipSettings
from pipeline.embedders import EmbedderKind, EmbedderSettings
from pipeline.params import EnhanceParams, RerankSettings, RetrievalSettings, VerifySettings
from pipeline.roles import DEFAULT_REF_RATIO, RelativeRoles
from pipeline.scan import ScanSettings
from ttsr_core.config import SHIPPED_MODEL, Precision, SearchConfig, SearchMode

logger = logging.getLogger(__name__)

HOME_ENV = "REFSR_HOME"
DATABASE_ENV = "REFSR_DATABASE_URL"
MODEL_ENV = "REFSR_MODEL"
DEVICE_ENV = "REFSR_DEVICE"
DASK_ENV = "REFSR_DASK"  # address of a Dask scheduler, e.g. tcp://scheduler:8786
LEASE_ENV = "REFSR_CLAIM_LEASE_S"
REFERENCE_CACHE_ENV = "REFSR_REFERENCE_CACHE_MB"
SIGNING_KEY_ENV = "REFSR_SIGNING_KEY"  # PEM private key that signs Content Credentials
SIGNING_CERT_ENV = "REFSR_SIGNING_CERT"  # its PEM certificate chain, signer first
ALBUM_CONFIG_NAME = "refsr.toml"
DEFAULT_OUT_NAME = "enhanced"  # inside the album; ScanSettings excludes it by default


class DeviceChoice(enum.StrEnum):
    """Where the texture transformer runs."""

    AUTO = "auto"  # CUDA when present, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class ModelNotFoundError(FileNotFoundError):
    """The TTSR checkpoint is not where the settings say; the message tells how to fix it."""


def default_home(env: Mapping[str, str]) -> Path:
    """$REFSR_HOME, else $XDG_DATA_HOME/refsr-album, else ~/.local/share/refsr-album."""
    if env.get(HOME_ENV, "").strip():
        return Path(env[HOME_ENV]).expanduser().resolve()
    xdg = env.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "refsr-album").resolve()


def default_model_path() -> Path:
    """The compact checkpoint shipped with the project (``ttsr_core.config.SHIPPED_MODEL``)."""
    return SHIPPED_MODEL


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Settings.{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Everything a flow needs, resolved at the entry point (CLI or deployment) and passed down.

    Precedence: command-line flag > environment variable > album's refsr.toml (scan thresholds
    only) > the defaults below.
    """

    home: Path
    database_url: str
    model_path: Path
    device: DeviceChoice = DeviceChoice.AUTO
    # Autocast; None = the device's default (bf16, else fp16, on CUDA; float32 on CPU, where bf16 is an
    # opt-in worth taking only with native bf16: benchmarks/README.md, "bf16 autocast on this CPU").
    precision: Precision | None = None
    search: SearchMode = SearchMode.FAST
    embedder: EmbedderKind = EmbedderKind.AUTO
    clip_weights: Path | None = None  # open_clip weights (file or folder); None: the Hugging Face cache
    # Scan thresholds: None = the album's refsr.toml, else pipeline.scan's defaults.
    min_ref_side: int | None = None
    max_target_side: int | None = None
    # Relative role rule (pipeline.roles); None: the album's refsr.toml, else DEFAULT_REF_RATIO
    # unless thresholds are given (flags or refsr.toml), which then decide roles instead.
    ref_ratio: float | None = None
    top_k: int = 4
    refs: int = 1
    # Geometric verification of the best `verify_pool` cosine candidates (pipeline/verification.py).
    verify: bool = True
    verify_pool: int = 24
    copies: bool = True  # find copies among the album's photos when indexing (flows/copies.py)
    restore: bool = True  # a recorded copy of a larger album photo is restored from it (pipeline/restore.py)
    rerank_target_side: int = 64
    rerank_candidate_side: int = 256
    outscale: float = 4.0
    output_format: str | None = None
    tile: int | None = 256
    out_dir: Path | None = None  # None: <album>/enhanced
    force: bool = False
    workers: int = 2  # Prefect task threads: loading/saving of one photo overlaps another's model work
    device_slots: int = 1  # model calls at once per device in one process
    retries: int = 2  # on transient errors (database busy, CUDA out of memory)
    retry_delay_s: float = 2.0
    progress: bool = False  # tqdm bars on stderr (the CLI turns them on)
    # Task engine (flows/runners.py): None and processes=False keep Prefect's threads in this process.
    dask: str | None = None  # a running Dask scheduler's address: its workers run the photo tasks
    processes: bool = False  # a temporary local Dask cluster of `workers` worker processes
    # Job claims on a server database (flows/locks.py): a holder's lease, renewed by a heartbeat every
    # third of it; a dead holder's job is taken over this long after its last renewal.
    claim_lease_s: float = 60.0
    claim_attempts: int = 3  # a job whose last N holders all died is not claimed again (it kills workers)
    report: bool = True  # build the HTML gallery (and its Prefect artifact) at the end of a run
    # Encoded references kept per process for the next targets that use them (ttsr_core/model/reference_cache.py):
    # ~0.7 GB for the compact model and a 1920×1440 reference; 0 keeps none.
    reference_cache_mb: int = 1024
    # Provenance inside each output (pipeline/stamp.py): a signed C2PA manifest, an XMP packet, and the
    # photos' file names only when asked. No key given: refsr's local key, made in `home` on first use.
    credentials: bool = True
    xmp: bool = True
    embed_names: bool = False
    signing_key: Path | None = None
    signing_cert: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))
        object.__setattr__(self, "model_path", Path(self.model_path))
        object.__setattr__(self, "device", DeviceChoice(self.device))
        object.__setattr__(self, "precision", Precision.parse(self.precision, "Settings.precision"))
        if self.device is DeviceChoice.CPU and self.precision is Precision.FLOAT16:
            raise ValueError("float16 autocast needs a CUDA device; on a CPU use bfloat16 (or float32)")
        object.__setattr__(self, "search", SearchMode(self.search))
        object.__setattr__(self, "embedder", EmbedderKind(self.embedder))
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", Path(self.out_dir).expanduser().resolve())
        if self.clip_weights is not None:
            object.__setattr__(self, "clip_weights", Path(self.clip_weights).expanduser())
        try:
            make_url(self.database_url)
        except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
            raise ValueError(f"Settings.database_url is not a SQLAlchemy URL: {self.database_url!r}") from exc
        for name in ("min_ref_side", "max_target_side", "tile"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("top_k", "refs", "verify_pool", "workers", "device_slots", "claim_attempts"):
            _positive_int(name, getattr(self, name))
        _positive_int("retries", self.retries, 0)
        if self.ref_ratio is not None:
            RelativeRoles(self.ref_ratio)
            if self.min_ref_side is not None or self.max_target_side is not None:
                raise ValueError("give either --ref-ratio or the thresholds --min-ref-side/--max-target-side, "
                                 f"not both (got ref_ratio={self.ref_ratio!r}, min_ref_side={self.min_ref_side!r}, "
                                 f"max_target_side={self.max_target_side!r})")
        if self.refs > self.top_k:
            raise ValueError(f"Settings.refs ({self.refs!r}) cannot exceed top_k ({self.top_k!r})")
        if not isinstance(self.retry_delay_s, (int, float)) or self.retry_delay_s < 0:
            raise ValueError(f"Settings.retry_delay_s must be >= 0, got {self.retry_delay_s!r}")
        if isinstance(self.claim_lease_s, bool) or not isinstance(self.claim_lease_s, (int, float)) \
                or not 0 < self.claim_lease_s < 86400:
            raise ValueError(f"Settings.claim_lease_s must be a number of seconds in (0, 86400), "
                             f"got {self.claim_lease_s!r}")
        if isinstance(self.reference_cache_mb, bool) or not isinstance(self.reference_cache_mb, int) \
                or self.reference_cache_mb < 0:
            raise ValueError(f"Settings.reference_cache_mb must be an int ≥ 0 (MB), got {self.reference_cache_mb!r}")
        if self.dask is not None and self.processes:
            raise ValueError(f"Settings: give a Dask scheduler address ({self.dask!r}) or a local cluster of "
                             "processes, not both")
        if (self.signing_key is None) != (self.signing_cert is None):
            raise ValueError(f"give both a signing key and its certificate chain, or neither (got key "
                             f"{self.signing_key!r}, certificate {self.signing_cert!r})")
        for name in ("signing_key", "signing_cert"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())
        # Validated by the objects built from these values, so errors name the same fields.
        self.retrieval()
        self.enhance_params()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, with keyword overrides (None means "not given")."""
        env = os.environ if env is None else env
        home = Path(overrides.pop("home", None) or default_home(env))
        db_url = overrides.pop("database_url", None) or env.get(DATABASE_ENV, "").strip() or (
            f"sqlite:///{home / 'refsr.db'}"
        )
        model = overrides.pop("model_path", None) or env.get(MODEL_ENV, "").strip() or default_model_path()
        device = overrides.pop("device", None) or env.get(DEVICE_ENV, "").strip() or DeviceChoice.AUTO
        clip_weights = overrides.pop("clip_weights", None) or env.get(CLIP_WEIGHTS_ENV, "").strip() or None
        if overrides.get("dask") is None and env.get(DASK_ENV, "").strip() and not overrides.get("processes"):
            overrides["dask"] = env[DASK_ENV].strip()
        if overrides.get("claim_lease_s") is None and env.get(LEASE_ENV, "").strip():
            try:
                overrides["claim_lease_s"] = float(env[LEASE_ENV])
            except ValueError:
                raise ValueError(f"${LEASE_ENV} must be a number of seconds, got {env[LEASE_ENV]!r}") from None
        if overrides.get("reference_cache_mb") is None and env.get(REFERENCE_CACHE_ENV, "").strip():
            try:
                overrides["reference_cache_mb"] = int(env[REFERENCE_CACHE_ENV])
            except ValueError:
                raise ValueError(f"${REFERENCE_CACHE_ENV} must be a whole number of MB, "
                                 f"got {env[REFERENCE_CACHE_ENV]!r}") from None
        for name, var in (("signing_key", SIGNING_KEY_ENV), ("signing_cert", SIGNING_CERT_ENV)):
            if overrides.get(name) is None and env.get(var, "").strip():
                overrides[name] = Path(env[var].strip())
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(home=home, database_url=db_url, model_path=Path(model).expanduser(), device=device,
                   clip_weights=clip_weights, **given)

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
        )

    def embedder_settings(self) -> EmbedderSettings:
        """What the embedder factories need: CLIP's weights and device come from these settings only."""
        device = None if self.device is DeviceChoice.AUTO else self.device.value
        return EmbedderSettings(clip=ClipSettings(weights=self.clip_weights, device=device))

    def enhance_params(self, amp_dtype: Precision | None = None) -> EnhanceParams:
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
        if path.resolve() == default_model_path():
            raise ModelNotFoundError(
                f"TTSR checkpoint not found: {path}. That is where the project's trained compact model is "
                f"shipped, and this checkout lacks it; pass a checkpoint with --model PATH or ${MODEL_ENV} "
                "(a random-weight model is never substituted)."
            )
        raise ModelNotFoundError(
            f"TTSR checkpoint not found: {path} (given by --model or ${MODEL_ENV}); the shipped default is "
            f"{default_model_path()}."
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


# -- per-album configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class AlbumConfig:
    """`<album>/refsr.toml`: thresholds that suit this album's photo sizes.

    ```toml
    [scan]
    min_ref_side = 480     # long side ≥ this: a reference candidate
    max_target_side = 320  # long side ≤ this: an enhancement target
    # or, instead of the thresholds:
    ref_ratio = 3.0        # a reference is at least 3x its target's long side
    ```
    """

    min_ref_side: int | None = None
    max_target_side: int | None = None
    ref_ratio: float | None = None

    @classmethod
    def read(cls, album_root: Path) -> AlbumConfig:
        path = Path(album_root) / ALBUM_CONFIG_NAME
        if not path.is_file():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read album config {str(path)!r}: {exc}") from exc
        scan = data.get("scan", {})
        if not isinstance(scan, dict):
            raise ValueError(f"{str(path)!r}: [scan] must be a table, got {scan!r}")
        unknown = set(scan) - {"min_ref_side", "max_target_side", "ref_ratio"}
        if unknown:
            raise ValueError(f"{str(path)!r}: unknown [scan] keys {sorted(unknown)}")
        if "ref_ratio" in scan and len(scan) > 1:
            raise ValueError(f"{str(path)!r}: [scan] sets ref_ratio and thresholds; keep one rule")
        for key, value in scan.items():
            if key == "ref_ratio":
                try:
                    RelativeRoles(value)
                except ValueError as exc:
                    raise ValueError(f"{str(path)!r}: {exc}") from None
            else:
                try:
                    _positive_int(key, value)
                except ValueError:
                    raise ValueError(f"{str(path)!r}: [scan] {key} must be a whole number >= 1, "
                                     f"got {value!r}") from None
        return cls(**scan)


def scan_settings(settings: Settings, album_root: Path) -> ScanSettings:
    """ScanSettings for one album: flags over refsr.toml over defaults; our output folder excluded.

    Roles: thresholds when any is given (flag or refsr.toml) and no --ref-ratio flag is; else the
    relative rule with --ref-ratio, refsr.toml's ref_ratio or DEFAULT_REF_RATIO.
    """
    album_root = Path(album_root).resolve()
    config = AlbumConfig.read(album_root)
    base = ScanSettings()
    flag_thresholds = settings.min_ref_side is not None or settings.max_target_side is not None
    toml_thresholds = config.min_ref_side is not None or config.max_target_side is not None
    if settings.ref_ratio is not None:
        ratio: float | None = settings.ref_ratio
    elif flag_thresholds or toml_thresholds:
        ratio = None
    else:
        ratio = config.ref_ratio or DEFAULT_REF_RATIO
    min_ref = settings.min_ref_side or config.min_ref_side or base.min_ref_side
    max_target = settings.max_target_side or config.max_target_side or base.max_target_side
    exclude = list(base.exclude)
    out = settings.output_dir(album_root).resolve()
    if out == album_root:
        raise ValueError(f"the output folder cannot be the album itself: {str(out)!r}")
    if out.is_relative_to(album_root) and out.name not in exclude:
        # Scans exclude by directory name at any depth; the output folder must never be read back.
        exclude.append(out.name)
    return ScanSettings(min_ref_side=min_ref, max_target_side=max_target, ref_ratio=ratio, exclude=tuple(exclude))


def index_file(settings: Settings, album_id: int, embedder_key: str) -> Path:
    """One FAISS file per album and embedder key, named readably and uniquely."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", embedder_key).strip("-")[:48]
    digest = hashlib.sha256(embedder_key.encode()).hexdigest()[:8]
    return settings.index_dir / f"album-{album_id}" / f"{slug}-{digest}.faiss"
