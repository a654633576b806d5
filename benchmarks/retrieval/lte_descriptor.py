"""A pooled texture-extractor (LTE) descriptor beside the built-in one on different-photograph pairs (issue 21 item 2).

Same protocol as verified_recall.py (whose loading it reuses): the 36 pairs of
``data/different-pairs/pairs.tsv``, targets at long side 400 and JPEG q85, the 36 references plus
``--distractors`` training photos as candidates at long side 1024. The LTE descriptor of a photo: the
photo area-averaged to long side ``--sides``, the shipped model's LTE (relu1_1 / relu2_1 / relu3_1),
each level GeM-pooled over positions with exponent p (1 = mean, 3 = leaning to the strongest
responses), L2-normalised; "lv1-3" is the three levels' normalised vectors side by side. "Centred"
subtracts the candidates' mean descriptor first (ReLU features are all positive, so raw cosines are
high for every pair). Blends rank by built-in cosine + w × LTE cosine.

Each ranking reports recall@1/@5 (strict: the listed reference; same scene: any reference of the
target's source, as verified_recall.py counts) and how many targets have a same-scene photo among
its first 24 and 48 (the pool verification can reach). Then geometric verification (homography,
weight 1: the product's default) re-orders the first 24 or 48 of the built-in cosine, the first 24
of each ``--verify`` ranking, and the built-in 24 widened by ``--extra`` more from ``--widen`` (scored
by the built-in cosine + bonus, as the product would). ``--validation`` adds retrieval_recall.py's
pairs (plain and degraded queries): a check on photos the choice was not made on.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/retrieval/lte_descriptor.py --threads 1 \
        --data data --validation --out /tmp/lte_descriptor.md

ms/target (verification) sums the measured target features and the measured match + fit of each
candidate in that pool; candidate features are once per photo (cached by the album) and apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cpu, experiment, load_model, run_child  # noqa: E402
from retrieval_recall import IMAGE_SUFFIXES, load_rgb  # noqa: E402
from verified_recall import messenger_copy, rank_of, read_yardstick, recall, scene_of  # noqa: E402

logger = logging.getLogger(__name__)
LEVELS = ("lv1", "lv2", "lv3")
POOLS = (24, 48)
BASE = "cosine (built-in descriptor)"
# Verified by default: two lv3 descriptors (the level that ranks best alone), a blend of each, and the
# one blend that brings a same-scene photo more into the first 24 and loses nothing before verification.
VERIFIED = ["LTE lv3, GeM p1, side 256", "LTE lv3, GeM p3, side 256, centred",
            "built-in + 0.5 × LTE lv3, GeM p1, side 256, centred", "built-in + 1 × LTE lv3, GeM p3, side 256, centred",
            "built-in + 1 × LTE lv3, GeM p3, side 256"]


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def lte_descriptors(lte, images: list[np.ndarray], side: int, ps: tuple[float, ...]) -> tuple[dict, float]:
    """{(level, p): (N, C) L2-normalised GeM vectors} of `images` at long side `side`, and ms per photo."""
    import torch

    from pipeline.images import shrink
    from ttsr_core.model.inference import to_tensor

    out: dict[tuple[str, float], list[np.ndarray]] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for im in images:
            levels = lte(to_tensor(shrink(im, side, Image.Resampling.BOX, 2.0)))  # each (1, C, h, w)
            for p in ps:
                pooled = [l2(f[0].clamp_min(1e-6).pow(p).mean(dim=(1, 2)).pow(1.0 / p).numpy()) for f in levels]
                for name, vec in zip(LEVELS, pooled):
                    out.setdefault((name, p), []).append(vec)
                out.setdefault(("lv1-3", p), []).append(l2(np.concatenate(pooled)))
    ms = (time.perf_counter() - t0) * 1000 / len(images)
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}, ms


def summarise(scores: np.ndarray, true_scene: list[set[int]]) -> dict:
    """Recall and pool hits of ranking every target's candidates by `scores` (targets, candidates)."""
    orders = [[int(i) for i in np.argsort(-row, kind="stable")] for row in scores]
    strict = [rank_of(o, {ti}) for ti, o in enumerate(orders)]
    scene = [rank_of(o, true_scene[ti]) for ti, o in enumerate(orders)]
    row = {"r1": recall(strict, 1), "r5": recall(strict, 5), "s1": recall(scene, 1), "s5": recall(scene, 5)}
    for pool in POOLS:
        row[f"pool{pool}"] = int(sum(r <= pool for r in scene))
        row[f"pool{pool}_strict"] = int(sum(r <= pool for r in strict))
    return row


class Verifier:
    """Homography verification at the product's defaults; features and inliers measured once and memoised."""

    def __init__(self, targets: list[np.ndarray], candidates: list[np.ndarray]) -> None:
        from pipeline.params import VerifySettings

        self.settings = VerifySettings()
        self.targets, self.candidates = targets, candidates
        self.target_features: dict[int, tuple[object, float]] = {}
        self.cand_features: dict[int, tuple[object, float]] = {}
        self.pairs: dict[tuple[int, int], tuple[int, float]] = {}

    def _features(self, memo: dict, images: list[np.ndarray], i: int):  # type: ignore[no-untyped-def]
        from pipeline.matching.verification import local_features

        if i not in memo:
            t0 = time.perf_counter()
            memo[i] = (local_features(images[i], self.settings), time.perf_counter() - t0)
        return memo[i][0]

    def inliers(self, ti: int, c: int) -> int:
        from pipeline.matching.verification import verify_pair

        if (ti, c) not in self.pairs:
            tf = self._features(self.target_features, self.targets, ti)
            cf = self._features(self.cand_features, self.candidates, c)
            t0 = time.perf_counter()
            n = verify_pair(tf, cf, self.settings).inliers
            self.pairs[(ti, c)] = (n, time.perf_counter() - t0)
        return self.pairs[(ti, c)][0]

    def reorder(self, ti: int, base: np.ndarray, pool: list[int]) -> tuple[list[int], float]:
        """`pool` by base score + verification bonus, then the rest by `base`; and the seconds it took."""
        from pipeline.matching.verification import verification_bonus

        score = {c: float(base[c]) + verification_bonus(self.inliers(ti, c), self.settings) for c in pool}
        rest = [int(i) for i in np.argsort(-base, kind="stable") if int(i) not in score]
        seconds = self.target_features[ti][1] + sum(self.pairs[(ti, c)][1] for c in pool)
        return sorted(pool, key=lambda c: -score[c]) + rest, seconds


def top(row: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-row, kind="stable")[:k]]


def verified_rows(verifier: Verifier, scores: dict[str, np.ndarray], plan: dict[str, tuple[str, str | None, int, int]],
                  true_scene: list[set[int]]) -> dict[str, dict]:
    """Each planned ranking: (base scores, scores that add candidates or None, pool, how many they add)."""
    out = {}
    for name, (base_name, extra_name, pool, extra) in plan.items():
        strict, scene, seconds = [], [], []
        for ti in range(len(verifier.targets)):
            base = scores[base_name][ti]
            candidates = top(base, pool)
            if extra_name is not None:
                candidates += [c for c in top(scores[extra_name][ti], pool + extra) if c not in candidates][:extra]
            order, s = verifier.reorder(ti, base, candidates)
            strict.append(rank_of(order, {ti}))
            scene.append(rank_of(order, true_scene[ti]))
            seconds.append(s)
        out[name] = {"r1": recall(strict, 1), "r5": recall(strict, 5), "s1": recall(scene, 1),
                     "s5": recall(scene, 5), "pool": len(candidates), "ms": float(np.mean(seconds)) * 1000}
        logger.info("verified %s: %s", name, out[name])
    return out


def ranking_scores(lte, targets: list[np.ndarray], candidates: list[np.ndarray], opts: dict) -> dict[str, np.ndarray]:
    """Every ranking's (targets, candidates) scores: the built-in cosine, each LTE descriptor, each blend."""
    from pipeline.embedding.fallback import FallbackEmbedder

    emb = FallbackEmbedder()
    scores = {BASE: emb.embed(targets) @ emb.embed(candidates).T}
    for side in opts["sides"]:
        cand_d, _ = lte_descriptors(lte, candidates, side, tuple(opts["ps"]))
        targ_d, _ = lte_descriptors(lte, targets, side, tuple(opts["ps"]))
        for (level, p), c in cand_d.items():
            t = targ_d[(level, p)]
            scores[f"LTE {level}, GeM p{p:g}, side {side}"] = t @ c.T
            mu = c.mean(axis=0)  # the album's mean: what every photo shares says nothing about which one
            scores[f"LTE {level}, GeM p{p:g}, side {side}, centred"] = l2(t - mu) @ l2(c - mu).T
    for n in [n for n in scores if n != BASE]:
        for w in opts["weights"]:
            scores[f"built-in + {w:g} × {n}"] = scores[BASE] + w * scores[n]
    return scores


def validation_rows(lte, data: Path, opts: dict) -> dict[str, dict[str, list[float]]]:
    """retrieval_recall.py's check (data/validation pairs, 50 distractors), plain and degraded queries.

    Each of the 14 pair photos (long side 256) searches the others at 1024, itself excluded; rows:
    recall@1, recall@5, mean rank of its partner. Only the built-in and the lv3 rankings, to stay short.
    """
    from retrieval_recall import read_pairs

    val = data / "validation"
    files = [f for pair in read_pairs(val / "pairs.tsv") for f in pair]
    distractors = sorted(p for p in (data / "training").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    candidates = [load_rgb(p, 1024) for p in [val / f for f in files] + distractors]
    out = {}
    for mode, degrade in (("plain", False), ("degraded", True)):
        queries = [load_rgb(val / f, 256, degrade) for f in files]
        scores = ranking_scores(lte, queries, candidates, opts)
        rows = {}
        for name in [n for n in scores if n == BASE or "lv3," in n]:
            ranks = []
            for i in range(len(files)):
                row = scores[name][i].copy()
                row[i] = -np.inf  # the query's own photo
                ranks.append(rank_of(top(row, len(row)), {i ^ 1}))  # pair files are laid out a0, b0, a1, b1, ...
            rows[name] = [recall(ranks, 1), recall(ranks, 5), float(np.mean(ranks))]
        out[mode] = rows
    return out


def child(opts: dict) -> dict:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    data = Path(opts["data"])
    folder = data / "different-pairs"
    pairs = read_yardstick(folder)
    dirs = [data / d for d in ("training", "training-extra", "training-more")]
    extra = sorted(f for d in dirs if d.is_dir() for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    candidates = [load_rgb(c, 1024) for c in [folder / r for _, r in pairs] + extra[: opts["distractors"]]]
    targets = [messenger_copy(folder / t, 400, 85) for t, _ in pairs]
    true_scene = [{j for j, (_, r) in enumerate(pairs) if scene_of(r) == scene_of(t)} for t, _ in pairs]

    from pipeline.embedding.fallback import FallbackEmbedder

    t0 = time.perf_counter()
    FallbackEmbedder().embed(candidates)
    builtin_ms = (time.perf_counter() - t0) * 1000 / len(candidates)
    lte = load_model("ttsr-lite", opts.get("model"))[0].LTE.eval()
    lte_ms = {side: lte_descriptors(lte, candidates, side, tuple(opts["ps"]))[1] for side in opts["sides"]}
    scores = ranking_scores(lte, targets, candidates, opts)
    rows = {n: summarise(s, true_scene) for n, s in scores.items()}

    plan = {f"verified, {BASE}, pool 24": (BASE, None, 24, 0), f"verified, {BASE}, pool 48": (BASE, None, 48, 0)}
    plan.update({f"verified, {n}, pool 24": (n, None, 24, 0) for n in opts["verify"]})
    plan[f"verified, built-in pool 24 + {opts['extra']} more from {opts['widen']}"] = (BASE, opts["widen"], 24,
                                                                                       opts["extra"])
    verifier = Verifier(targets, candidates)
    verified = verified_rows(verifier, scores, plan, true_scene)
    feat_ms = float(np.mean([s for _, s in verifier.cand_features.values()])) * 1000
    missed = misses(scores, opts["verify"], verifier, true_scene, pairs)
    return {"cpu": cpu(), "targets": len(targets), "candidates": len(candidates), "builtin_ms": builtin_ms,
            "lte_ms": lte_ms, "feature_ms": feat_ms, "rows": rows, "verified": verified,
            "per_target_misses": missed,
            "validation": validation_rows(lte, data, opts) if opts["validation"] else None}


def misses(scores: dict[str, np.ndarray], names: list[str], verifier: Verifier, true_scene: list[set[int]],
           pairs: list[tuple[str, str]]) -> list[list]:
    """Same-scene rank under the built-in and each of `names`, and the most inliers any same-scene photo
    gets, for every target that one of them leaves out of its 24."""
    out = []
    for ti, (t, _) in enumerate(pairs):
        ranks = [rank_of(top(scores[n][ti], len(scores[n][ti])), true_scene[ti]) for n in [BASE, *names]]
        if max(ranks) > 24:
            out.append([t, *ranks, max(verifier.inliers(ti, c) for c in true_scene[ti])])
    return out


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| ranking | recall@1 | recall@5 | recall@1, same scene | recall@5, same scene | same scene in top 24 "
             "| same scene in top 48 | listed ref in top 24 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['r1']:.2f} | {r['r5']:.2f} | {r['s1']:.2f} | {r['s5']:.2f} | {r['pool24']} "
                     f"| {r['pool48']} | {r['pool24_strict']} |")
    return lines


def report(args: argparse.Namespace) -> None:
    opts = {"data": str(args.data.resolve()), "distractors": args.distractors, "sides": args.sides, "ps": args.ps,
            "weights": args.weights, "extra": args.extra, "model": str(args.model) if args.model else None,
            "verify": args.verify, "widen": args.widen, "validation": args.validation}
    res = run_child(Path(__file__).resolve(), [opts], threads=args.threads or 1)
    n = res["targets"]
    lines = [f"CPU: {res['cpu']}", "",
             f"{n} targets against {res['candidates']} candidates; built-in descriptor {res['builtin_ms']:.0f} ms/photo, "
             "LTE descriptor " + ", ".join(f"{v:.0f} ms/photo at side {k}" for k, v in res["lte_ms"].items())
             + f"; candidate SIFT features {res['feature_ms']:.0f} ms/photo (once per photo, cached)", ""]
    rows = res["rows"]
    base = rows[BASE]
    keep = {k: v for k, v in rows.items() if k == BASE or not args.short or
            (v["pool24"] >= base["pool24"] and v["s1"] >= base["s1"])}
    lines += table(keep) + ["", f"(pool columns: targets of {n})", "",
                            "| verified ranking (homography, weight 1) | pool | recall@1 | recall@5 | recall@1, same scene "
                            "| recall@5, same scene | ms/target (verification) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in res["verified"].items():
        lines.append(f"| {name} | {r['pool']} | {r['r1']:.2f} | {r['r5']:.2f} | {r['s1']:.2f} | {r['s5']:.2f} "
                     f"| {r['ms']:.0f} |")
    lines += ["", "Same-scene rank of every target that one of these rankings leaves out of its first 24, and the "
              "most inliers a photo of its scene gets:", "",
              "| target | built-in | " + " | ".join(args.verify) + " | inliers |", "| --- " * (3 + len(args.verify)) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in res["per_target_misses"]]
    for mode, vrows in (res["validation"] or {}).items():
        lines += ["", f"retrieval_recall.py's validation pairs, {mode} queries (14 queries, 63 candidates each):", "",
                  "| ranking | recall@1 | recall@5 | mean rank |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | {r1:.2f} | {r5:.2f} | {mr:.1f} |" for n, (r1, r5, mr) in vrows.items()]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=1), encoding="utf-8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--distractors", type=int, default=200)
    p.add_argument("--sides", type=int, nargs="+", default=[256, 320], help="long side the LTE sees")
    p.add_argument("--ps", type=float, nargs="+", default=[1.0, 3.0], help="GeM exponents")
    p.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="LTE cosine's weight in a blend")
    p.add_argument("--extra", type=int, default=8, help="candidates the LTE adds to the built-in 24")
    p.add_argument("--verify", nargs="+", default=VERIFIED, help="rankings whose first 24 are also verified")
    p.add_argument("--widen", default=VERIFIED[1], help="the LTE ranking that adds --extra to the built-in 24")
    p.add_argument("--validation", action="store_true", help="also retrieval_recall.py's pairs, plain and degraded")
    p.add_argument("--model", type=Path, default=None, help="checkpoint whose LTE is used (default: the shipped one)")
    p.add_argument("--short", action="store_true", help="list only the rankings that lose nothing against the built-in")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table (and .json of everything) here")


if __name__ == "__main__":
    experiment(__doc__, child, report, add_arguments)
