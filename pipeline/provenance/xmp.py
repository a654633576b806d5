"""The XMP packet of an output: DerivedFrom, History, IPTC digital source type and refsr's own fields; write and read."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, PngImagePlugin

from pipeline.provenance.facts import Provenance, ReferenceFact, RestoredFrom

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stRef": "http://ns.adobe.com/xap/1.0/sType/ResourceRef#",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    # Our own schema; a URN because no web page is promised behind it.
    "refsr": "urn:refsr-album:xmp:1.0/",
}
# TIFF's XMLPacket tag (Adobe XMP spec part 3, 1.1.4): where TIFF readers look for XMP.
TIFF_XMP_TAG = 700
PNG_XMP_KEY = "XML:com.adobe.xmp"
_PACKET = re.compile(rb"<x:xmpmeta\b.*?</x:xmpmeta>", re.S)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def _text(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _reference(r: ReferenceFact) -> str:
    name = _text("refsr:Name", r.name) if r.name is not None else ""
    return ("<rdf:li rdf:parseType=\"Resource\">" + _text("refsr:Rank", r.rank) + _text("refsr:SHA256", r.sha256)
            + _text("refsr:Cosine", f"{r.cosine:.6f}") + _text("refsr:Relevance", f"{r.relevance:.6f}") + name
            + "</rdf:li>")


def _restored(r: RestoredFrom | None) -> str:
    if r is None:
        return ""
    name = _text("refsr:Name", r.name) if r.name is not None else ""
    return ("<refsr:RestoredFrom rdf:parseType=\"Resource\">" + _text("refsr:SHA256", r.sha256)
            + _text("refsr:FidelityDB", f"{r.fidelity_db:.2f}") + _text("refsr:Covered", f"{r.covered:.4f}") + name
            + "</refsr:RestoredFrom>")


def _action(p: Provenance) -> str:
    """What the History event says was done."""
    sr = f"reference-based super-resolution (TTSR) with model {p.model_name}"
    if p.restored_from is None:
        return sr
    restored = f"restored from its original sha256:{p.restored_from.sha256} (aligned, colours fitted, cropped)"
    return restored if p.restored_from.covered >= 1.0 else f"{restored}; elsewhere {sr}"


def packet(p: Provenance) -> bytes:
    """The XMP packet (UTF-8, with its xpacket wrapper) describing one output.

    xmpMM:DerivedFrom names the target by content hash (``sha256:<hex>``: the same photo anywhere,
    under any name); xmpMM:History has one ``derived`` event with the software and its time;
    Iptc4xmpExt:DigitalSourceType marks a composite with trained-algorithm media; ``refsr:`` holds
    the references (hash, rank, scores), the model, the job key, the run and, for a copy given its
    original back, ``refsr:RestoredFrom`` (the original's hash, fidelity, coverage). File names appear only
    when the Provenance carries them (--embed-names), never folders.
    """
    namespaces = " ".join(f"xmlns:{k}={quoteattr(v)}" for k, v in NS.items() if k != "x")
    derived = _text("stRef:documentID", f"sha256:{p.target_sha256}")
    if p.target_name is not None:
        derived += _text("stRef:filePath", p.target_name)
    run = _text("refsr:RunID", p.run_id) if p.run_id is not None else ""
    body = (
        f"<rdf:Description rdf:about=\"\" {namespaces}>"
        + _text("xmp:CreatorTool", p.software) + _text("xmp:MetadataDate", _iso(p.when))
        + _text("xmp:ModifyDate", _iso(p.when))
        + _text("xmpMM:DocumentID", f"xmp.did:{uuid.uuid4()}") + _text("xmpMM:InstanceID", f"xmp.iid:{uuid.uuid4()}")
        + f"<xmpMM:DerivedFrom rdf:parseType=\"Resource\">{derived}</xmpMM:DerivedFrom>"
        + "<xmpMM:History><rdf:Seq><rdf:li rdf:parseType=\"Resource\">"
        + _text("stEvt:action", "derived")
        + _text("stEvt:parameters", _action(p))
        + _text("stEvt:softwareAgent", p.software) + _text("stEvt:when", _iso(p.when))
        + "</rdf:li></rdf:Seq></xmpMM:History>"
        + _text("Iptc4xmpExt:DigitalSourceType", p.digital_source_type)
        + _text("refsr:TargetSHA256", p.target_sha256) + _text("refsr:ModelName", p.model_name)
        + _text("refsr:ModelSHA256", p.model_sha256) + _text("refsr:JobKey", p.job_key) + run
        + "<refsr:References><rdf:Seq>" + "".join(_reference(r) for r in p.references) + "</rdf:Seq></refsr:References>"
        + _restored(p.restored_from)
        + "</rdf:Description>"
    )
    xml = (f"<?xpacket begin=\"\ufeff\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>"
           f"<x:xmpmeta xmlns:x=\"{NS['x']}\"><rdf:RDF xmlns:rdf=\"{NS['rdf']}\">{body}</rdf:RDF></x:xmpmeta>"
           "<?xpacket end=\"r\"?>")
    return xml.encode("utf-8")


def save_params(fmt: str, xmp: bytes, exif: bytes | None = None) -> dict[str, object]:
    """Pillow save arguments that put `xmp` where each format's readers look for it.

    JPEG: an APP1 ``http://ns.adobe.com/xap/1.0/`` segment; WebP: the ``XMP `` chunk (both Pillow's
    ``xmp=``); PNG: an uncompressed ``iTXt`` chunk keyed ``XML:com.adobe.xmp``; TIFF: tag 700, merged
    into `exif` (the EXIF blob the caller saves; Pillow's TIFF writer takes its tags from there and would
    drop them beside a ``tiffinfo=``). Other formats (BMP) have no place for XMP: ValueError.
    """
    if fmt in {"JPEG", "WEBP"}:
        return {"xmp": xmp}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(PNG_XMP_KEY, xmp.decode("utf-8"), zip=False)
        return {"pnginfo": info}
    if fmt == "TIFF":
        tags = Image.Exif()
        if exif:
            tags.load(exif)
        tags[TIFF_XMP_TAG] = xmp
        return {"exif": tags.tobytes()}
    raise ValueError(f"format {fmt!r} has no place for XMP (JPEG, PNG, WebP and TIFF do)")


def find_packets(data: bytes) -> list[bytes]:
    """Every ``x:xmpmeta`` element in a file's bytes: each format above stores the packet uncompressed."""
    return _PACKET.findall(data)


def _field(node: ET.Element, prefix: str, name: str) -> str | None:
    found = node.find(f"{{{NS[prefix]}}}{name}")
    return found.text if found is not None else node.get(f"{{{NS[prefix]}}}{name}")


def parse(xml: bytes) -> Provenance | None:
    """The Provenance in one packet that :func:`packet` wrote; None for anyone else's XMP."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for desc in root.iter(f"{{{NS['rdf']}}}Description"):
        target = _field(desc, "refsr", "TargetSHA256")
        refs_node = desc.find(f"{{{NS['refsr']}}}References")
        if target is None or refs_node is None:
            continue
        refs = [
            {"rank": _field(li, "refsr", "Rank"), "sha256": _field(li, "refsr", "SHA256"),
             "cosine": _field(li, "refsr", "Cosine"), "relevance": _field(li, "refsr", "Relevance"),
             "name": _field(li, "refsr", "Name")}
            for li in refs_node.iter(f"{{{NS['rdf']}}}li")
        ]
        derived = desc.find(f"{{{NS['xmpMM']}}}DerivedFrom")
        restored = desc.find(f"{{{NS['refsr']}}}RestoredFrom")
        return Provenance.from_dict({
            "target_sha256": target, "references": refs, "model_name": _field(desc, "refsr", "ModelName"),
            "model_sha256": _field(desc, "refsr", "ModelSHA256"), "software": _field(desc, "xmp", "CreatorTool"),
            "job_key": _field(desc, "refsr", "JobKey"), "run_id": _field(desc, "refsr", "RunID"),
            "target_name": _field(derived, "stRef", "filePath") if derived is not None else None,
            "when": _field(desc, "xmp", "ModifyDate"),
            "restored_from": None if restored is None else {
                "sha256": _field(restored, "refsr", "SHA256"), "fidelity_db": _field(restored, "refsr", "FidelityDB"),
                "covered": _field(restored, "refsr", "Covered"), "name": _field(restored, "refsr", "Name")},
        })
    return None


def read(data: bytes) -> Provenance | None:
    """The refsr Provenance in a file's bytes, or None when it carries none (or only others' XMP)."""
    for xml in find_packets(data):
        found = parse(xml)
        if found is not None:
            return found
    return None
