"""Recall@1/@5 of the true partner photo among album distractors, per embedder (writes a Markdown table)."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.embedding.base import Embedder  # noqa: E402
from pipeline.embedding.clip import WEIGHTS_ENV_VAR, ClipEmbedder, ClipSettings, ClipWeightsNotFound  # noqa: E402
from pipeline.embedding.fallback import ColorHistogramEmbedder, FallbackEmbedder  # noqa: E402
from pipeline.embedding.vector_index import IndexSettings, VectorIndex  # noqa: E402

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Result:
    name: str
    key: str
    recall1: float
    recall5: float
    mean_rank: float
    margin: float
    ms_per_photo: float
    ranks: tuple[int, ...]


def load_rgb(path: Path, long_side: int, degrade: bool = False) -> np.ndarray:
    """uint8 HxWx3, EXIF-oriented, reduced so its long side is at most `long_side`.

    `degrade` imitates an old phone's photo of the scene: 8 % off each side, a warm colour
    cast, brighter exposure (gamma 0.8) and JPEG quality 30 — fixed, so runs are repeatable.
    """
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if degrade:
            w, h = im.size
            im = im.crop((int(0.08 * w), int(0.08 * h), int(0.92 * w), int(0.92 * h)))
        im.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        arr = np.asarray(im, dtype=np.uint8).copy()
    if degrade:
        x = (arr.astype(np.float32) / 255.0) ** 0.8 * np.array([1.08, 1.0, 0.88], dtype=np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=30)
        arr = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()
    return arr


def read_pairs(tsv: Path) -> list[tuple[str, str]]:
    with open(tsv, newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f, delimiter="\t") if row and not row[0].startswith("#")]


def evaluate(name: str, emb: Embedder, queries: list[np.ndarray], candidates: list[np.ndarray],
             partner: list[int], query_pos: list[int]) -> Result:
    """Query i searches all candidates except itself (candidate query_pos[i]); partner[i] is its pair."""
    t0 = time.perf_counter()
    cand_vecs = emb.embed(candidates)
    query_vecs = emb.embed(queries)
    ms = (time.perf_counter() - t0) * 1000.0 / (len(candidates) + len(queries))
    index = VectorIndex.build(np.arange(len(candidates), dtype=np.int64), cand_vecs, key=emb.key,
                              settings=IndexSettings())
    ranks, margins = [], []
    for i, qv in enumerate(query_vecs):
        scores, ids = index.search(qv[None], k=len(candidates), exclude_ids=[query_pos[i]])
        found = np.flatnonzero(ids[0] == partner[i])
        ranks.append(int(found[0]) + 1 if found.size else len(candidates))
        # Partner score minus the best other candidate's: > 0 means retrieved first, and how safely.
        others = scores[0][(ids[0] != partner[i]) & (ids[0] >= 0)]
        margins.append(float(scores[0][found[0]] - others.max()) if found.size else float("nan"))
    r = np.array(ranks)
    return Result(name, emb.key, float((r <= 1).mean()), float((r <= 5).mean()), float(r.mean()),
                  float(np.mean(margins)), ms, tuple(ranks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--query-size", type=int, default=256, help="long side of the low-resolution queries")
    parser.add_argument("--candidate-size", type=int, default=1024, help="long side of the candidates")
    parser.add_argument("--clip-weights", type=Path, default=os.environ.get(WEIGHTS_ENV_VAR) or None,
                        help=f"open_clip weights file or folder (default ${WEIGHTS_ENV_VAR})")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here too")
    parser.add_argument("--degrade", action="store_true",
                        help="also degrade the queries (crop, colour cast, exposure, JPEG q30)")
    parser.add_argument("--per-query", action="store_true", help="print each query's partner rank")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    val = args.data / "validation"
    pairs = read_pairs(val / "pairs.tsv")
    pair_files = [f for p in pairs for f in p]
    distractors = sorted(p for p in (args.data / "training").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    cand_paths = [val / f for f in pair_files] + distractors
    candidates = [load_rgb(p, args.candidate_size) for p in cand_paths]
    queries = [load_rgb(val / f, args.query_size, args.degrade) for f in pair_files]
    query_pos = list(range(len(pair_files)))
    partner = [i ^ 1 for i in query_pos]  # pair files are laid out (a0, b0, a1, b1, ...)

    embedders: list[tuple[str, Embedder]] = [
        ("colour histogram (RGB 8x8x8, baseline)", ColorHistogramEmbedder()),
        ("fallback", FallbackEmbedder()),
    ]
    clip_note = ""
    try:
        embedders.append(("CLIP", ClipEmbedder(ClipSettings(weights=args.clip_weights))))
    except ClipWeightsNotFound as exc:
        clip_note = f"CLIP: not measured, no weights at hand ({exc})."
        logger.warning(clip_note)

    results = [evaluate(n, e, queries, candidates, partner, query_pos) for n, e in embedders]
    lines = [
        f"{len(queries)} queries (long side {args.query_size}) vs {len(candidates) - 1} candidates each "
        f"({len(pair_files) - 1} pair photos + {len(distractors)} distractors, long side {args.candidate_size})"
        + (", queries degraded (crop 8 %, colour cast, gamma 0.8, JPEG q30)" if args.degrade else ""),
        "",
        "| embedder | key | recall@1 | recall@5 | mean rank | mean margin | ms/photo |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r.name} | `{r.key}` | {r.recall1:.2f} | {r.recall5:.2f} | {r.mean_rank:.1f} "
                     f"| {r.margin:+.3f} | {r.ms_per_photo:.1f} |")
    if clip_note:
        lines += ["", clip_note]
    if args.per_query:
        lines += ["", "| query | partner | " + " | ".join(r.name for r in results) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in results) + " |"]
        for i, f in enumerate(pair_files):
            lines.append(f"| {f} | {pair_files[partner[i]]} | " + " | ".join(str(r.ranks[i]) for r in results) + " |")
    table = "\n".join(lines)
    sys.stdout.write(table + "\n")
    if args.out is not None:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
