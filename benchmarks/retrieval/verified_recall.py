"""Recall@1/@5 of cosine retrieval against geometric verification (and texture relevance) on different-photograph pairs.

Protocol: every pair of ``data/different-pairs/pairs.tsv`` gives a target (reduced to ``--target-side``,
JPEG quality ``--quality``, as a messenger copy would be) whose true reference is a *different*
photograph of the same subject. The candidates are every pair's reference plus ``--distractors``
photos from the training folders (sorted, the first N), all at long side ``--candidate-side``. The
built-in descriptor ranks them by cosine; verification (pipeline.matching.verification) then matches the
target against the top ``--pool`` and re-orders them by cosine + bonus; with ``--model`` the texture
model's relevance re-ranks the first four of a ranking, as ``refsr enhance`` does.

    PYTHONPATH=. .venv/bin/python benchmarks/retrieval/verified_recall.py --distractors 200 \
        --model models/ttsr-lite/ttsr-lite-x4.safetensors

Time per target: the target's features plus matching and fitting against the pool (the candidates'
features are computed once per photo and cached by the album, reported per photo apart).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.embedding.fallback import FallbackEmbedder  # noqa: E402
from pipeline.matching.verification import local_features, verification_bonus, verify_pair  # noqa: E402
from pipeline.params import GeometricModel, VerifySettings  # noqa: E402
from retrieval_recall import IMAGE_SUFFIXES, load_rgb  # noqa: E402

logger = logging.getLogger(__name__)
RELEVANCE_POOL = 4  # what `refsr enhance` re-ranks by texture relevance (RetrievalSettings.top_k)


def messenger_copy(path: Path, side: int, quality: int) -> np.ndarray:
    """The photo at `path` reduced to long side `side` and JPEG-compressed at `quality`."""
    arr = load_rgb(path, side)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()


def read_yardstick(folder: Path) -> list[tuple[str, str]]:
    lines = (folder / "pairs.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]
    return [(r[0], r[1]) for r in rows if r[0] != "target"]


def recall(ranks: list[int], k: int) -> float:
    return float(np.mean([r <= k for r in ranks]))


def rank_of(order: list[int], true: set[int]) -> int:
    """1-based rank of the first of `true` in `order`; past the end when none is there."""
    return next((i + 1 for i, c in enumerate(order) if c in true), len(order) + 1)


def scene_of(name: str) -> str:
    """The source a yardstick photo comes from (``kivy-city__cityCC0_f0040.png`` → ``kivy-city``)."""
    return name.split("__", 1)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--distractors", type=int, default=200, help="training photos added as candidates")
    p.add_argument("--target-side", type=int, default=400)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--candidate-side", type=int, default=1024)
    p.add_argument("--pool", type=int, default=24, help="cosine candidates verified per target")
    p.add_argument("--model", type=Path, default=None, help="TTSR checkpoint: add texture-relevance rows")
    p.add_argument("--per-target", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    folder = args.data / "different-pairs"
    pairs = read_yardstick(folder)
    refs = [folder / r for _, r in pairs]
    pool_dirs = [args.data / d for d in ("training", "training-extra", "training-more")]
    extra = sorted(f for d in pool_dirs if d.is_dir() for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    cand_paths = refs + extra[: args.distractors]
    t0 = time.perf_counter()
    candidates = [load_rgb(c, args.candidate_side) for c in cand_paths]
    targets = [messenger_copy(folder / t, args.target_side, args.quality) for t, _ in pairs]
    logger.info("%d targets, %d candidates loaded in %.1f s", len(targets), len(candidates), time.perf_counter() - t0)

    emb = FallbackEmbedder()
    cv = emb.embed(candidates)
    tv = emb.embed(targets)
    cosines = tv @ cv.T  # (targets, candidates); both are L2-normalised
    settings = {m: VerifySettings(model=m, pool=args.pool) for m in GeometricModel}
    t0 = time.perf_counter()
    cand_features = [local_features(c, settings[GeometricModel.HOMOGRAPHY]) for c in candidates]
    feature_ms = (time.perf_counter() - t0) * 1000 / len(candidates)

    relevance_of: Callable[[int, list[int]], dict[int, float]] | None = None
    if args.model is not None:
        from pipeline.matching.retrieval import texture_relevance
        from ttsr_core.model.checkpoint import load_checkpoint

        model = load_checkpoint(args.model).model.eval()
        memo: dict[tuple[int, int], float] = {}

        def relevance_of(ti: int, ids: list[int]) -> dict[int, float]:
            todo = [c for c in ids if (ti, c) not in memo]
            if todo:
                for c, s in zip(todo, texture_relevance(model, targets[ti], [candidates[c] for c in todo])):
                    memo[(ti, c)] = s
            return {c: memo[(ti, c)] for c in ids}

    rows: dict[str, list[int]] = {}
    scene_rows: dict[str, list[int]] = {}
    times: dict[str, list[float]] = {}
    # Several pairs come from one video or one photo series: another pair's reference of the same source
    # is also a different photograph of the target's subject, so it counts in the "same scene" columns.
    same_scene = [{j for j, (_, r) in enumerate(pairs) if scene_of(r) == scene_of(t)} for t, _ in pairs]

    def add(name: str, ti: int, order: list[int], seconds: float = 0.0) -> None:
        rows.setdefault(name, []).append(rank_of(order, {ti}))
        scene_rows.setdefault(name, []).append(rank_of(order, same_scene[ti]))
        times.setdefault(name, []).append(seconds)

    per_target = []
    for ti in range(len(targets)):
        cos_order = [int(i) for i in np.argsort(-cosines[ti], kind="stable")]
        add("cosine (built-in descriptor)", ti, cos_order)
        pool = cos_order[: args.pool]
        inliers: dict[GeometricModel, dict[int, int]] = {}
        for m, s in settings.items():
            t0 = time.perf_counter()
            tf = local_features(targets[ti], s)
            inliers[m] = {c: verify_pair(tf, cand_features[c], s).inliers for c in pool}
            seconds = time.perf_counter() - t0
            for weight in (0.25, 1.0):
                w = replace(s, weight=weight)
                score = {c: float(cosines[ti, c]) + verification_bonus(inliers[m][c], w) for c in pool}
                order = sorted(pool, key=lambda c: -score[c]) + cos_order[args.pool:]
                add(f"verified, {m.value}, weight {weight:g}", ti, order, seconds)
        if relevance_of is not None:
            rel = relevance_of(ti, cos_order[:RELEVANCE_POOL])
            order = sorted(rel, key=lambda c: -rel[c]) + cos_order[RELEVANCE_POOL:]
            add("cosine → relevance (top 4; today's default)", ti, order)
            h, s = inliers[GeometricModel.HOMOGRAPHY], settings[GeometricModel.HOMOGRAPHY]
            score = {c: float(cosines[ti, c]) + verification_bonus(h[c], s) for c in pool}
            vorder = sorted(pool, key=lambda c: -score[c]) + cos_order[args.pool:]
            top = vorder[:RELEVANCE_POOL]
            rel = relevance_of(ti, top)
            add("verified (H, weight 1) → relevance (top 4)", ti,
                sorted(top, key=lambda c: -rel[c]) + vorder[RELEVANCE_POOL:])
            # Verified candidates keep their place; only the unverified rest of the four is re-ranked.
            sure = [c for c in top if verification_bonus(h[c], s) > 0]
            rest = sorted((c for c in top if c not in sure), key=lambda c: -rel[c])
            add("verified (H, weight 1) → relevance among the unverified", ti, sure + rest + vorder[RELEVANCE_POOL:])
        per_target.append((pairs[ti][0], rank_of(cos_order, {ti}),
                           inliers[GeometricModel.HOMOGRAPHY].get(ti), inliers[GeometricModel.FUNDAMENTAL].get(ti),
                           max((n for c, n in inliers[GeometricModel.HOMOGRAPHY].items() if c != ti), default=0)))

    lines = [
        f"{len(targets)} targets (long side {args.target_side}, JPEG q{args.quality}) against {len(candidates)} "
        f"candidates ({len(refs)} references + {len(candidates) - len(refs)} distractors, long side "
        f"{args.candidate_side}); verification pool {args.pool}; candidate features {feature_ms:.0f} ms/photo "
        "(once per photo, cached)",
        "",
        "| ranking | recall@1 | recall@5 | recall@1, same scene | recall@5, same scene | ms/target (verification) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, ranks in rows.items():
        sr = scene_rows[name]
        lines.append(f"| {name} | {recall(ranks, 1):.2f} | {recall(ranks, 5):.2f} | {recall(sr, 1):.2f} "
                     f"| {recall(sr, 5):.2f} | {np.mean(times[name]) * 1000:.0f} |")
    if args.per_target:
        lines += ["", "| target | cosine rank | H inliers (true) | F inliers (true) | best H inliers (other) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {t} | {r} | {h if h is not None else '-'} | {f if f is not None else '-'} | {o} |"
                  for t, r, h, f, o in per_target]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
