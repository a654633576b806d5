"""Content Credentials (C2PA) through the official library: sign an output's bytes, read and verify a file."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import c2pa
from PIL import Image

from pipeline.provenance.facts import COMPOSITE_CAPTURE, DIGITAL_SOURCE_TYPE, SOFTWARE_NAME, Provenance
from pipeline.provenance.signing import LOCAL_ORG, SigningIdentity

logger = logging.getLogger(__name__)

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp",
        "GIF": "image/gif", "HEIF": "image/heif", "AVIF": "image/avif", "MPO": "image/jpeg"}
ASSERTION = "org.refsr.enhancement"  # our own assertion: Provenance.to_dict(), signed with the rest
ORIGINAL = "original"  # the ingredient label of the photo a copy was restored from (pipeline.matching.restore)
# Nothing is fetched while signing or verifying: the album may be offline, and a lookup would tell a
# server which photos are being checked. The library's automatic thumbnails are off: it makes PNGs
# hundreds of KB large; ours are small JPEGs made from pixels already in memory.
_SETTINGS = {
    "builder": {"thumbnail": {"enabled": False}},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
}


class CredentialsRefused(RuntimeError):
    """The library would not sign this output (its format, its size); the message says why, in one line."""


@dataclass(frozen=True)
class Ingredient:
    """A photo the output was made from, as the manifest shows it: hash, thumbnail, and its bytes' own manifest."""

    label: str  # "target", "reference-0", ..., or ORIGINAL for the reference a copy was restored from
    sha256: str
    title: str  # a file name only with --embed-names, else a description with the hash
    source: Path  # read to carry the photo's own Content Credentials, if it has any; never written into the file
    source_format: str | None  # Pillow's name for it
    thumbnail_jpeg: bytes


def _context() -> c2pa.Context:
    return c2pa.Context.from_dict(_SETTINGS)


def _signer(identity: SigningIdentity) -> c2pa.Signer:
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(identity.alg, identity.chain_pem, identity.key_pem, None))


def _actions(p: Provenance, ingredients: Sequence[Ingredient]) -> list[dict[str, object]]:
    """The target opened; restored from its original (a copy given it back); edited by the model with the references."""
    agent = {"name": SOFTWARE_NAME, "version": p.software_version}
    actions: list[dict[str, object]] = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["target"]}}]
    restored = p.restored_from
    if restored is not None:
        actions.append({"action": "c2pa.edited", "digitalSourceType": COMPOSITE_CAPTURE, "when": p.when.isoformat(),
                        "softwareAgent": agent,
                        "description": f"restored from its original sha256:{restored.sha256}: aligned to the copy, "
                                       f"colours fitted, cropped to its framing ({restored.covered:.1%} of the pixels)",
                        "parameters": {"ingredientIds": [ORIGINAL]}})
    if restored is None or restored.covered < 1.0:
        refs = [i.label for i in ingredients if i.label != "target"]
        actions.append({"action": "c2pa.edited", "digitalSourceType": DIGITAL_SOURCE_TYPE, "when": p.when.isoformat(),
                        "softwareAgent": agent,
                        "description": f"{'reference-based' if refs else 'single-image (no reference lent texture)'} "
                                       f"super-resolution (TTSR), model {p.model_name} sha256:{p.model_sha256}",
                        "parameters": {"ingredientIds": refs}})
    return actions


def manifest_definition(p: Provenance, ingredients: Sequence[Ingredient]) -> dict[str, object]:
    """The manifest: the target opened, then restored from its original and/or edited by the model; our facts beside."""
    return {
        "claim_generator_info": [{"name": SOFTWARE_NAME, "version": p.software_version}],
        "title": f"{p.target_name or 'photo'} (enhanced ×4)",
        "thumbnail": {"format": "image/jpeg", "identifier": "output-thumbnail"},
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": _actions(p, ingredients)}},
            {"label": ASSERTION, "data": p.to_dict()},
        ],
    }


def _add_ingredient(builder: c2pa.Builder, ing: Ingredient) -> None:
    relationship = "parentOf" if ing.label == "target" else "componentOf"
    definition = {"title": ing.title, "relationship": relationship, "label": ing.label,
                  "instance_id": f"sha256:{ing.sha256}",
                  "thumbnail": {"format": "image/jpeg", "identifier": f"{ing.label}-thumbnail"}}
    builder.add_resource(f"{ing.label}-thumbnail", io.BytesIO(ing.thumbnail_jpeg))
    mime = MIME.get(ing.source_format or "")
    if mime is not None and mime in c2pa.Builder.get_supported_mime_types():
        try:
            with open(ing.source, "rb") as stream:
                builder.add_ingredient({**definition, "format": mime}, mime, stream)
            return
        except c2pa.C2paError as exc:
            logger.debug("ingredient %s: the library could not read its file (%s); using the thumbnail", ing.label, exc)
    # A format the library cannot read (BMP, PGM...): the thumbnail stands in for the photo.
    builder.add_ingredient({**definition, "format": "image/jpeg"}, "image/jpeg", io.BytesIO(ing.thumbnail_jpeg))


def sign(data: bytes, fmt: str, p: Provenance, ingredients: Sequence[Ingredient], thumbnail_jpeg: bytes,
         identity: SigningIdentity) -> bytes:
    """`data` (an encoded image of Pillow format `fmt`) with a signed C2PA manifest embedded.

    The manifest's hard binding (c2pa.hash.data or boxes) covers every byte of the file outside the
    manifest itself, XMP included, so any later change to the pixels or to our XMP fails
    verification. Raises CredentialsRefused when the library refuses the format or the file.
    """
    mime = MIME.get(fmt)
    if mime is None or mime not in c2pa.Builder.get_supported_mime_types():
        raise CredentialsRefused(f"the C2PA library cannot embed a manifest in {fmt} files")
    try:
        with c2pa.Builder(manifest_definition(p, ingredients), context=_context()) as builder:
            builder.add_resource("output-thumbnail", io.BytesIO(thumbnail_jpeg))
            for ing in ingredients:
                _add_ingredient(builder, ing)
            dest = io.BytesIO()
            builder.sign(_signer(identity), mime, io.BytesIO(data), dest)
    except c2pa.C2paError as exc:
        raise CredentialsRefused(f"the C2PA library refused to sign: {' '.join(str(exc).split())}") from exc
    return dest.getvalue()


@dataclass(frozen=True)
class Verdict:
    """What `refsr verify` says about one file."""

    ok: bool
    reason: str  # one line: why it passed or failed
    state: str | None = None  # the library's validation state: "Valid", "Trusted", "Invalid"; None: no manifest
    signer: str | None = None  # issuer and common name of the signing certificate
    local_signer: bool = False  # refsr's local key: integrity, not identity
    failures: tuple[str, ...] = ()  # the library's failure codes with their explanations
    provenance: Provenance | None = None  # from our signed assertion


def _mime_of(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return MIME.get(im.format or "")
    except Exception:  # not an image at all: the caller reports that
        return None


def _read(data: bytes) -> tuple[c2pa.Reader | None, str | None]:
    mime = _mime_of(data)
    if mime is None:
        return None, "not an image refsr can read"
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, _context())
    except c2pa.C2paError as exc:
        return None, f"its Content Credentials cannot be read: {' '.join(str(exc).split())}"
    return reader, None


def read_provenance(data: bytes) -> Provenance | None:
    """Our facts from a file's signed manifest (valid or not), or None when it has none."""
    reader, _ = _read(data)
    if reader is None:
        return None
    with reader:
        return _provenance(reader.get_active_manifest() or {})


def _provenance(manifest: dict) -> Provenance | None:
    for assertion in manifest.get("assertions", []):
        if assertion.get("label") == ASSERTION:
            try:
                return Provenance.from_dict(assertion["data"])
            except ValueError:
                return None
    return None


def verify(path: Path) -> Verdict:
    """Check a file's manifest: the signature, and that its bytes (pixels and XMP) are the ones signed."""
    data = Path(path).read_bytes()
    reader, problem = _read(data)
    if reader is None:
        return Verdict(False, problem or "the file carries no Content Credentials (C2PA manifest): it was never "
                       "signed, or a re-encode, crop or metadata strip removed them")
    with reader:
        state = reader.get_validation_state()
        manifest = reader.get_active_manifest() or {}
        results = reader.get_validation_results() or {}
    info = manifest.get("signature_info") or {}
    signer = ", ".join(str(info[k]) for k in ("issuer", "common_name") if info.get(k)) or None
    local = info.get("issuer") == LOCAL_ORG
    failures = tuple(f"{f.get('code')}: {f.get('explanation', '')}".strip()
                     for f in (results.get("activeManifest") or {}).get("failure", []))
    # A signer outside any trust list is expected (refsr's local key, a user's own CA) and is the
    # "identity" half; integrity is what the remaining codes judge.
    integrity = tuple(f for f in failures if not f.startswith("signingCredential.untrusted"))
    ok = state in {"Valid", "Trusted"} and not integrity
    if ok:
        reason = ("signature valid and the pixels are the ones signed" +
                  ("; signed with refsr's local key: proves integrity, not identity" if local else ""))
    elif any("dataHash.mismatch" in f or "boxesHash.mismatch" in f for f in integrity):
        reason = "the file changed after it was signed: its bytes no longer match the signed hash (edited copy)"
    else:
        reason = "; ".join(integrity) or f"validation state {state}"
    return Verdict(ok, reason, state, signer, local, failures, _provenance(manifest))


def summary(v: Verdict) -> dict[str, object]:
    """JSON-able form of a Verdict for `refsr verify --json`."""
    return {"ok": v.ok, "reason": v.reason, "state": v.state, "signer": v.signer, "local_signer": v.local_signer,
            "failures": list(v.failures), "provenance": v.provenance.to_dict() if v.provenance else None}
