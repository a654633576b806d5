"""Build examples/album/ from the fetched validation pairs: large references as they are, small targets.

Each pair of related real photographs (two views of one street, a stereo pair, ...) becomes one
scene of a user's album: the reference photo is copied byte for byte (never enlarged), and the
other view is shrunk with PIL bicubic to a small JPEG, as a messenger or an old phone would have
left it. The album's role thresholds (refsr.toml) suit these sizes: references are 741-1282 px,
targets at most 160 px. Run `bash scripts/fetch_data.sh validation` first.

    .venv/bin/python scripts/make_sample_album.py [--data data/validation] [--out examples/album]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TARGET_SIDE = 160  # long side of the low-resolution targets: x4 gives 640 px outputs
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Scene:
    folder: str  # album sub-folder
    target: str  # file in data/validation that becomes the small target
    reference: str  # file in data/validation copied as the reference
    target_name: str  # album-relative name of the target
    package: str
    source_path: str
    licence: str
    relation: str
    orientation: int = 1  # store the target rotated with this EXIF orientation (6 = rotate 90° CW)


OPENCV = ("opencv-doc (Debian)", "/usr/share/doc/opencv-doc/examples/data/",
          "Apache-2.0 AND BSD-3-Clause (Debian's copyright file of opencv, `Files: *`)")
SKIMAGE = ("scikit-image wheel", "skimage/data/",
           "BSD-3-Clause as distributed with scikit-image; Middlebury 2014 stereo images, cite Scharstein et al. 2014")

SCENES = (
    Scene("leuven", "leuvenA.jpg", "leuvenB.jpg", "from-chat/leuvenA-small.jpg", *OPENCV[:2], OPENCV[2],
          "two views of one street"),
    Scene("graffiti", "graf1.png", "graf3.png", "from-chat/graf1-small.jpg", *OPENCV[:2], OPENCV[2],
          "viewpoint change on a painted wall"),
    Scene("aloe", "aloeL.jpg", "aloeR.jpg", "old-phone/aloeL-small.jpg", *OPENCV[:2], OPENCV[2],
          "stereo pair (Middlebury)", orientation=6),
    Scene("motorcycle", "motorcycle_left.png", "motorcycle_right.png", "old-phone/motorcycle-small.jpg",
          *SKIMAGE[:2], SKIMAGE[2], "stereo pair (Middlebury 2014)"),
)

ALBUM_CONFIG = """\
# Role thresholds for this album (see `refsr enhance --help`). The library defaults (references
# >= 1600 px, targets <= 1024 px) suit phone photos; this sample's references are 741-1282 px
# and its targets 160 px.
[scan]
min_ref_side = 480
max_target_side = 320
"""


def _small(src: Path, side: int) -> Image.Image:
    im = Image.open(src).convert("RGB")
    scale = side / max(im.size)
    return im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "refsr sample album"  # Make: shows that outputs keep the target's EXIF
    exif[0x9003] = "2019:06:01 12:00:00"  # DateTimeOriginal (in the Exif IFD on write by Pillow)
    exif[ORIENTATION_TAG] = orientation
    return exif


def build(data: Path, out: Path) -> list[Path]:
    missing = [name for s in SCENES for name in (s.target, s.reference) if not (data / name).is_file()]
    if missing:
        raise SystemExit(f"missing {missing} in {data}: run `bash scripts/fetch_data.sh validation` first")
    written = []
    for scene in SCENES:
        folder = out / scene.folder
        folder.mkdir(parents=True, exist_ok=True)
        ref = folder / scene.reference
        shutil.copyfile(data / scene.reference, ref)  # byte for byte: never enlarged, never re-encoded
        target = folder / scene.target_name
        target.parent.mkdir(parents=True, exist_ok=True)
        small = _small(data / scene.target, TARGET_SIDE)
        if scene.orientation == 6:
            # Stored rotated 90° counter-clockwise; EXIF 6 tells viewers to turn it back upright.
            small = small.transpose(Image.Transpose.ROTATE_90)
        small.save(target, "JPEG", quality=88, exif=_exif(scene.orientation).tobytes())
        written += [ref, target]
    (out / "refsr.toml").write_text(ALBUM_CONFIG, encoding="utf-8")
    lines = [
        "# Sample album: sources and licences",
        "",
        "Real photographs from packages reachable from any machine (fetched by `scripts/fetch_data.sh`),",
        "arranged by `scripts/make_sample_album.py`. References are the original files, unchanged; targets",
        f"are the partner views shrunk to {TARGET_SIDE} px (PIL bicubic) and saved as JPEG with a small EXIF block.",
        "",
        "| album file | derived from | package | path in package | licence | relation |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in SCENES:
        lines.append(f"| `{s.folder}/{s.reference}` | original, unchanged | {s.package} | `{s.source_path}{s.reference}` "
                     f"| {s.licence} | reference for the target below |")
        lines.append(f"| `{s.folder}/{s.target_name}` | `{s.target}`, shrunk to {TARGET_SIDE} px"
                     + (", stored rotated with EXIF orientation 6" if s.orientation == 6 else "")
                     + f" | {s.package} | `{s.source_path}{s.target}` | {s.licence} | {s.relation} |")
    lines += [
        "",
        "OpenCV's sample images ship in Debian's `opencv-doc` package, whose copyright file licenses the whole",
        "tree as Apache-2.0 AND BSD-3-Clause; the Leuven and Graffiti images are the Oxford affine-covariant-regions test",
        "sequences (Mikolajczyk et al.), the Aloe pair is from the Middlebury stereo datasets (Scharstein et al.).",
        "The motorcycle pair is from the Middlebury 2014 stereo benchmark (Nesic, Westling, Wang, Kitajima,",
        "Krathwohl and Scharstein; Scharstein et al., GCPR 2014), down-sampled x4 by scikit-image and bundled in its",
        "wheel's `skimage/data` (BSD-3-Clause). Cite the datasets when publishing results.",
        "",
    ]
    (out / "LICENSES.md").write_text("\n".join(lines), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "validation")
    parser.add_argument("--out", type=Path, default=REPO / "examples" / "album")
    args = parser.parse_args(argv)
    written = build(args.data, args.out)
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} photos ({total / 1e6:.1f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
