"""The XMP packet of an output: DerivedFrom, History, IPTC digital source type and refsr's own fields; write and read."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, PngImagePlugin

from pipeline.provenance import DIGITAL_SOURCE_TYPE, Provenance, ReferenceFact

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


def packet(p: Provenance) -> bytes:
    """The XMP packet (UTF-8, with its xpacket wrapper) describing one output.

    xmpMM:DerivedFrom names the target by content hash (``sha256:<hex>``: the same photo anywhere,
    under any name); xmpMM:History has one ``derived`` event with the software and its time;
    Iptc4xmpExt:DigitalSourceType marks a composite with trained-algorithm media; ``refsr:`` holds
    the references (hash, rank, scores), the model, the job key and the run. File names appear only
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
        + _text("stEvt:parameters", f"reference-based super-resolution (TTSR) with model {p.model_name}")
        + _text("stEvt:softwareAgent", p.software) + _text("stEvt:when", _iso(p.when))
        + "</rdf:li></rdf:Seq></xmpMM:History>"
        + _text("Iptc4xmpExt:DigitalSourceType", DIGITAL_SOURCE_TYPE)
        + _text("refsr:TargetSHA256", p.target_sha256) + _text("refsr:ModelName", p.model_name)
        + _text("refsr:ModelSHA256", p.model_sha256) + _text("refsr:JobKey", p.job_key) + run
        + "<refsr:References><rdf:Seq>" + "".join(_reference(r) for r in p.references) + "</rdf:Seq></refsr:References>"
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
        return Provenance.from_dict({
            "target_sha256": target, "references": refs, "model_name": _field(desc, "refsr", "ModelName"),
            "model_sha256": _field(desc, "refsr", "ModelSHA256"), "software": _field(desc, "xmp", "CreatorTool"),
            "job_key": _field(desc, "refsr", "JobKey"), "run_id": _field(desc, "refsr", "RunID"),
            "target_name": _field(derived, "stRef", "filePath") if derived is not None else None,
            "when": _field(desc, "xmp", "ModifyDate"),
        })
    return None


def read(data: bytes) -> Provenance | None:
    """The refsr Provenance in a file's bytes, or None when it carries none (or only others' XMP)."""
    for xml in find_packets(data):
        found = parse(xml)
        if found is not None:
            return found
    return None
