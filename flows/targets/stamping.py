"""What an enhancement writes into its own output: the stamp request built from a job, and the key that signs it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath

from flows.settings import Settings
from pipeline.matching.retrieval import RankedReference
from pipeline.provenance.facts import Provenance, ReferenceFact
from pipeline.provenance.signing import SigningIdentity, load_identity, local_identity
from pipeline.provenance.stamp import StampRequest

_lock = threading.Lock()
_identities: dict[tuple[Path, Path | None, Path | None], SigningIdentity] = {}  # per process: read a key once


def software_version() -> str:
    try:
        return metadata.version("refsr-album")
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH without an install
        return "0+unknown"


def signing_identity(settings: Settings) -> SigningIdentity | None:
    """The key that signs this process's manifests: the configured one, else refsr's local key; None with --no-credentials.

    ValueError (one line, naming the file) for a key or chain that cannot be read.
    """
    if not settings.credentials:
        return None
    slot = (settings.home, settings.signing_key, settings.signing_cert)
    with _lock:
        if slot not in _identities:
            if settings.signing_key is not None and settings.signing_cert is not None:
                _identities[slot] = load_identity(settings.signing_key, settings.signing_cert)
            else:
                _identities[slot] = local_identity(settings.home)
        return _identities[slot]


def _name(rel_path: str, settings: Settings) -> str | None:
    return PurePosixPath(rel_path).name if settings.embed_names else None


def stamp_request(settings: Settings, *, target_sha256: str, target_rel: str, ranked: Sequence[RankedReference],
                  ref_rels: Sequence[str], model_name: str, model_sha256: str, job_key: str,
                  run_id: int | None) -> StampRequest:
    """The provenance one enhancement writes into its output, and which carriers the settings ask for."""
    refs = tuple(ReferenceFact(r.rank, r.sha256, float(r.cosine), float(r.relevance), _name(rel, settings))
                 for r, rel in zip(ranked, ref_rels))
    provenance = Provenance(target_sha256, refs, model_name, model_sha256, software_version(), job_key,
                            run_id=run_id, target_name=_name(target_rel, settings))
    return StampRequest(provenance, xmp=settings.xmp, identity=signing_identity(settings))
