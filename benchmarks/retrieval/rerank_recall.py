"""Does re-ranking by the texture model's relevance find the true reference more often than cosine alone?

Protocol (seeded, repeatable): every photo of the validation and extra pairs (data/validation,
data/validation-extra) is a query in turn, its pair partner the true reference. A query is what an
album's small copy of a scene looks like: a crop of 55-75 % of each side at a seeded position, a warm
colour cast, JPEG quality 60, long side 256; ``--crops`` such copies per photo. The candidates are every
other pair photo plus the distractors (data/training and data/training-extra), long side 1024. Cosine
top-k comes from the built-in embedder (or CLIP with ``--clip-weights``); each model then re-ranks those
k by its mean soft attention (``pipeline.matching.retrieval.texture_relevance`` with the album's settings).

    .venv/bin/python benchmarks/retrieval/rerank_recall.py --model models/ttsr-lite/ttsr-lite-x4.safetensors [--model OTHER]
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.embedding.registry import EmbedderKind, make_embedder  # noqa: E402
from pipeline.embedding.vector_index import IndexSettings, VectorIndex  # noqa: E402
from pipeline.matching.retrieval import texture_relevance  # noqa: E402
from pipeline.params import RerankSettings  # noqa: E402
from retrieval_recall import IMAGE_SUFFIXES, load_rgb, read_pairs  # noqa: E402
from ttsr_core.model.checkpoint import load_checkpoint  # noqa: E402

logger = logging.getLogger(__name__)


def album_copy(path: Path, seed: int, side: int = 256) -> np.ndarray:
    """A cropped, colour-cast, JPEG-60 small copy of the photo at ``path`` (seeded)."""
    rng = np.random.default_rng(seed)
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        f = rng.uniform(0.55, 0.75)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
        arr = np.clip(np.asarray(im, dtype=np.float32) * np.array([1.06, 1.0, 0.9]), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=60)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--model", type=Path, action="append", required=True, help="checkpoint to re-rank with (repeat)")
    p.add_argument("--top-k", type=int, default=4, help="cosine candidates re-ranked (the album default is 4)")
    p.add_argument("--crops", type=int, default=3, help="small copies per pair photo")
    p.add_argument("--embedder", default="fallback", choices=[k.value for k in EmbedderKind])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    pairs = [(tsv.parent / a, tsv.parent / b) for tsv in (args.data / "validation" / "pairs.tsv",
                                                         args.data / "validation-extra" / "pairs.tsv")
             if tsv.is_file() for a, b in read_pairs(tsv)]
    if not pairs:
        p.exit(2, "no pairs: run `bash scripts/fetch_data.sh validation` first\n")
    photos = [x for pair in pairs for x in pair]  # (a0, b0, a1, b1, …): the partner of i is i ^ 1
    distractors = sorted(q for folder in ("training", "training-extra") if (args.data / folder).is_dir()
                         for q in (args.data / folder).iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
    cand_paths = photos + distractors
    candidates = [load_rgb(q, 1024) for q in cand_paths]
    queries = [(i, album_copy(photos[i], seed=1000 * i + c)) for i in range(len(photos)) for c in range(args.crops)]
    embedder = make_embedder(EmbedderKind(args.embedder))
    index = VectorIndex.build(np.arange(len(candidates), dtype=np.int64), embedder.embed(candidates),
                              key=embedder.key, settings=IndexSettings())
    query_vecs = embedder.embed([q for _, q in queries])
    tops = [index.search(v[None], k=args.top_k, exclude_ids=[i])[1][0].tolist() for (i, _), v in zip(queries, query_vecs)]
    partner = [i ^ 1 for i, _ in queries]
    cos1 = np.mean([t[0] == want for t, want in zip(tops, partner)])
    in_k = np.mean([want in t for t, want in zip(tops, partner)])
    print(f"{len(queries)} queries ({args.crops} small copies of each of {len(photos)} pair photos) vs "
          f"{len(candidates) - 1} candidates ({len(photos) - 1} pair photos + {len(distractors)} distractors); "
          f"embedder {embedder.key}, top-{args.top_k} re-ranked; torch threads {args.threads}\n")
    print("| ranking | recall@1 | partner among the re-ranked | mean relevance: partner / best other | s per query |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| cosine alone | {cos1:.2f} | {in_k:.2f} | | |")
    settings = RerankSettings()
    for path in args.model:
        model = load_checkpoint(path).model
        hits, margins, t0 = 0, [], time.perf_counter()
        for (i, query), top, want in zip(queries, tops, partner):
            rel = texture_relevance(model, query, [candidates[j] for j in top], settings)
            best = top[int(np.argmax(rel))]
            hits += best == want
            if want in top:
                others = [r for j, r in zip(top, rel) if j != want]
                margins.append((rel[top.index(want)], max(others) if others else float("nan")))
        seconds = (time.perf_counter() - t0) / len(queries)
        mine, other = np.mean([m[0] for m in margins]), np.mean([m[1] for m in margins])
        print(f"| re-ranked by `{path}` | {hits / len(queries):.2f} | {in_k:.2f} | {mine:.3f} / {other:.3f} | "
              f"{seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
