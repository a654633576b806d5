"""Provenance in the file: XMP read back by exiftool, the C2PA manifest by the library's reader, for every format."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from pipeline.images import load_rgb, save_atomic
from pipeline.provenance import credentials, xmp
from pipeline.provenance.facts import COMPOSITE_CAPTURE, DIGITAL_SOURCE_TYPE, Provenance, ReferenceFact, RestoredFrom
from pipeline.provenance.signing import LOCAL_NOTICE, load_identity, local_identity
from pipeline.provenance.stamp import ProvenanceStamp, StampRequest, ingredients_for, thumbnail_jpeg
from pipeline.vocabulary import CredentialsState

T, R0, R1, M, K = ("1" * 64, "2" * 64, "3" * 64, "4" * 64, "5" * 64)
SIGNABLE = ["JPEG", "PNG", "WEBP", "TIFF"]
EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
exiftool = pytest.mark.skipif(shutil.which("exiftool") is None,
                              reason="exiftool not installed (Debian: libimage-exiftool-perl; .ci/run installs it)")


def _provenance(names: bool = False) -> Provenance:
    refs = (ReferenceFact(0, R0, 0.91, 0.62, "big.jpg" if names else None), ReferenceFact(1, R1, 0.8, 0.4))
    return Provenance(T, refs, "compact-x4", M, "0.1.0", K, run_id=17, target_name="small.jpg" if names else None)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory):
    return local_identity(tmp_path_factory.mktemp("home"))


@pytest.fixture
def sources(tmp_path: Path) -> tuple[tuple[Path, str, np.ndarray], list[tuple[Path, str, np.ndarray]]]:
    rng = np.random.default_rng(5)
    out = []
    for name, fmt, size in (("small.jpg", "JPEG", (24, 32)), ("big.png", "PNG", (96, 128)), ("other.bmp", "BMP", (96, 96))):
        rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / name, fmt)
        out.append((tmp_path / name, fmt, rgb))
    return out[0], out[1:]


def _write(path: Path, fmt: str, request: StampRequest, sources, exif: bytes | None = None) -> ProvenanceStamp:
    rgb = np.random.default_rng(9).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    target, refs = sources
    signing = request.identity is not None
    stamp = ProvenanceStamp(request, ingredients_for(request.provenance, target, refs) if signing else (),
                            thumbnail_jpeg(rgb) if signing else b"")
    _, meta = load_rgb(target[0])
    if exif is not None:
        meta = type(meta)(**{**meta.__dict__, "exif": exif})
    save_atomic(path, rgb, meta, format=fmt, stamp=stamp)
    return stamp


def _exif_make() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Acme Camera"
    return exif.tobytes()


@exiftool
@pytest.mark.parametrize("fmt", SIGNABLE)
def test_exiftool_reads_the_xmp_and_iptc_fields_and_the_exif_survives(fmt, identity, sources, tmp_path) -> None:
    path = tmp_path / f"out{EXT[fmt]}"
    stamp = _write(path, fmt, StampRequest(_provenance(), identity=identity), sources, exif=_exif_make())
    assert stamp.state is CredentialsState.signed, stamp.note
    run = subprocess.run(["exiftool", "-j", "-struct", "-XMP:all", "-EXIF:Make", str(path)],
                         capture_output=True, text=True, check=True)
    tags = json.loads(run.stdout)[0]
    assert tags["DerivedFrom"]["DocumentID"] == f"sha256:{T}"
    history = tags["History"][0] if isinstance(tags["History"], list) else tags["History"]
    assert history["Action"] == "derived" and history["SoftwareAgent"] == "refsr-album 0.1.0"
    assert tags["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert tags["ModelSHA256"] == M and tags["RunID"] == 17 and tags["TargetSHA256"] == T
    assert [(r["Rank"], r["Sha256"]) for r in tags["References"]] == [(0, R0), (1, R1)]
    assert float(tags["References"][0]["Relevance"]) == pytest.approx(0.62)
    if fmt == "PNG":
        # exiftool 12.57 (Debian 12) takes the eXIf chunk's IFD0 for the C2PA box before it ("IFD0
        # pointer references previous JUMBFBox directory") and skips it; the chunk is intact.
        assert Image.open(path).getexif().get(0x010F) == "Acme Camera"
    else:
        assert tags["Make"] == "Acme Camera"


@pytest.mark.parametrize("fmt", SIGNABLE)
def test_the_c2pa_reader_validates_the_manifest_with_ingredients_and_action(fmt, identity, sources, tmp_path) -> None:
    path = tmp_path / f"out{EXT[fmt]}"
    _write(path, fmt, StampRequest(_provenance(), identity=identity), sources)
    with c2pa.Reader(credentials.MIME[fmt], io.BytesIO(path.read_bytes())) as reader:
        assert reader.get_validation_state() in {"Valid", "Trusted"}
        manifest = reader.get_active_manifest()
    ingredients = manifest["ingredients"]
    assert [i["instance_id"] for i in ingredients] == [f"sha256:{T}", f"sha256:{R0}", f"sha256:{R1}"]
    assert all("thumbnail" in i for i in ingredients)
    assert ingredients[0]["relationship"] == "parentOf"
    actions = next(a for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")["data"]["actions"]
    edited = next(a for a in actions if a["action"] == "c2pa.edited")
    assert edited["digitalSourceType"] == DIGITAL_SOURCE_TYPE and M in edited["description"]
    verdict = credentials.verify(path)
    assert verdict.ok and verdict.local_signer, verdict
    assert verdict.provenance is not None and verdict.provenance.references[0].sha256 == R0


@pytest.mark.parametrize("covered", [1.0, 0.93])
def test_a_restored_copy_names_its_original_in_the_xmp_and_as_the_manifests_ingredient(covered, identity, sources,
                                                                                      tmp_path) -> None:
    restored = Provenance(**{**_provenance().__dict__, "restored_from": RestoredFrom(R0, 36.5, covered)})
    path = tmp_path / "out.jpg"
    _write(path, "JPEG", StampRequest(restored, identity=identity), sources)
    carried = xmp.read(path.read_bytes())
    assert carried is not None and carried.restored_from == RestoredFrom(R0, 36.5, covered)
    verdict = credentials.verify(path)
    assert verdict.ok and verdict.provenance is not None and verdict.provenance.restored_from == carried.restored_from
    with c2pa.Reader("image/jpeg", io.BytesIO(path.read_bytes())) as reader:
        manifest = reader.get_active_manifest()
    original = next(i for i in manifest["ingredients"] if i["instance_id"] == f"sha256:{R0}")
    assert original["title"].startswith("original photo")  # the reader renames labels; the title stays
    actions = next(a for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")["data"]["actions"]
    edits = [a for a in actions if a["action"] == "c2pa.edited"]
    assert edits[0]["digitalSourceType"] == COMPOSITE_CAPTURE and R0 in edits[0]["description"]
    # The model's edit is named only when it made some of the pixels.
    assert [e["digitalSourceType"] for e in edits[1:]] == ([] if covered == 1.0 else [DIGITAL_SOURCE_TYPE])
    assert restored.digital_source_type == (COMPOSITE_CAPTURE if covered == 1.0 else DIGITAL_SOURCE_TYPE)


@pytest.mark.parametrize("fmt", SIGNABLE)
def test_no_paths_or_names_unless_asked(fmt, identity, sources, tmp_path) -> None:
    plain, named = tmp_path / f"plain{EXT[fmt]}", tmp_path / f"named{EXT[fmt]}"
    _write(plain, fmt, StampRequest(_provenance(), identity=identity), sources)
    _write(named, fmt, StampRequest(_provenance(names=True), identity=identity), sources)
    for leak in (str(tmp_path).encode(), b"small.jpg", b"big.jpg", b"big.png", b"other.bmp"):
        assert leak not in plain.read_bytes()
    assert b"small.jpg" in named.read_bytes() and b"big.jpg" in named.read_bytes()
    assert str(tmp_path).encode() not in named.read_bytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_edited_copy_fails_verify_with_the_reason(fmt, identity, sources, tmp_path) -> None:
    path = tmp_path / f"out{EXT[fmt]}"
    _write(path, fmt, StampRequest(_provenance(), identity=identity), sources)
    data = bytearray(path.read_bytes())
    # Flip bytes in the middle of the compressed pixels (after every metadata chunk or segment).
    middle = len(data) - len(data) // 8
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    edited = tmp_path / f"edited{EXT[fmt]}"
    edited.write_bytes(bytes(data))
    verdict = credentials.verify(edited)
    assert not verdict.ok and "changed after it was signed" in verdict.reason, verdict

    cropped = tmp_path / f"cropped{EXT[fmt]}"
    Image.open(path).crop((0, 0, 64, 64)).save(cropped, fmt)
    verdict = credentials.verify(cropped)
    assert not verdict.ok and "no Content Credentials" in verdict.reason


def test_a_format_the_library_refuses_is_still_written_and_says_so(identity, sources, tmp_path, caplog) -> None:
    path = tmp_path / "out.bmp"
    stamp = _write(path, "BMP", StampRequest(_provenance(), identity=identity), sources)
    assert Image.open(path).size == (128, 96)
    assert stamp.state is CredentialsState.refused
    assert "BMP" in (stamp.note or "") and "BMP" in caplog.text


@pytest.mark.parametrize("fmt", SIGNABLE)
def test_xmp_only_and_nothing(fmt, sources, tmp_path) -> None:
    only, bare = tmp_path / f"only{EXT[fmt]}", tmp_path / f"bare{EXT[fmt]}"
    assert _write(only, fmt, StampRequest(_provenance()), sources).state is CredentialsState.xmp_only
    assert _write(bare, fmt, StampRequest(_provenance(), xmp=False), sources).state is CredentialsState.none
    found = xmp.read(only.read_bytes())
    assert found is not None and found.model_sha256 == M and [r.sha256 for r in found.references] == [R0, R1]
    assert xmp.read(bare.read_bytes()) is None
    assert credentials.read_provenance(only.read_bytes()) is None


def test_local_key_is_made_once_owner_only_and_says_what_it_proves(tmp_path) -> None:
    first = local_identity(tmp_path)
    again = local_identity(tmp_path)
    assert first.key_pem == again.key_pem and first.local and first.alg == "es256"
    assert (tmp_path / "credentials" / "signing-key.pem").stat().st_mode & 0o077 == 0
    assert "integrity" in LOCAL_NOTICE and "not who" in LOCAL_NOTICE
    user_key = load_identity(tmp_path / "credentials" / "signing-key.pem", tmp_path / "credentials" / "signing-chain.pem")
    assert not user_key.local
    with pytest.raises(ValueError, match="not a file"):
        load_identity(tmp_path / "missing.pem", tmp_path / "credentials" / "signing-chain.pem")


def test_provenance_refuses_folders_in_names() -> None:
    with pytest.raises(ValueError, match="bare file name"):
        ReferenceFact(0, R0, 0.5, 0.5, "home/alice/big.jpg")
