"""Train a TTSR model: ``python -m ttsr_core.training.train --data FOLDER [FOLDER …] --out runs/NAME``.

Two stages share one resumable, seeded loop:
- ``--stage correspondence`` trains the texture extractor alone with the contrastive loss of
  ``ttsr_core.training.correspondence`` on warped pairs with known geometry (C2-Matching's idea);
- ``--stage sr`` (default) trains the whole network end to end: L1 (+ optional TPL/adversarial), plus the
  contrastive loss with weight ``--corr-weight`` so that the extractor keeps finding correspondences.
Both validate on held-out photos: PSNR gain over bicubic and matching accuracy.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from durable.files import atomic_write
from ttsr_core.config import PRESETS, preset
from ttsr_core.device import resolve_device
from ttsr_core.model.checkpoint import load_checkpoint, save_checkpoint
from ttsr_core.model.net import TTSR
from ttsr_core.training.correspondence import TEMPERATURE, contrastive_loss
from ttsr_core.training.data import CUFEDPairs, PairSettings, WarpedPairs, list_images, load_photo
from ttsr_core.training.degradations import LR_PIPELINES
from ttsr_core.training.losses import (
    ADV_WEIGHT, TPL_WEIGHT, Discriminator, gate_loss, gradient_penalty, reconstruction_loss,
    transferal_perceptual_loss,
)
from ttsr_core.training.photo_pairs import read_photo_pairs
from ttsr_core.training.train_validation import holdout_batches, pair_batches, validate

logger = logging.getLogger(__name__)

STAGES = ("sr", "correspondence")


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = 8000
    batch_size: int = 8
    lr: float = 2e-4
    lte_lr_ratio: float = 0.25  # the LTE learns more slowly (paper: 1e-5 vs 1e-4)
    min_lr_ratio: float = 0.05  # cosine decay to this fraction of lr
    warmup: int = 200
    # 0: cosine decay over the whole run. N > 0: constant after warm-up, then cosine decay over the last N
    # steps (warmup-stable-decay): a run can be extended, and a decayed branch cut from any step of it
    # by resuming a copy of its folder with --iterations STEP+N.
    decay_steps: int = 0
    tpl_weight: float = 0.0  # 1e-2 in the paper (TTSR); 0 = TTSR-rec
    adv_weight: float = 0.0  # 1e-3 in the paper
    stage: str = "sr"
    corr_weight: float = 0.0  # contrastive loss beside L1 in the sr stage
    # Teach the relevance gate (net.RelevanceGate) what is worth transferring: open where a same-photo
    # view shows the target position, shut everywhere for another photo's reference (binary
    # cross-entropy on its factor). Gradients also reach the texture extractor through the relevance.
    gate_weight: float = 0.0
    queries_per_sample: int = 64
    temperature: float = TEMPERATURE
    seed: int = 0
    save_every: int = 250
    val_every: int = 500
    amp_dtype: str | None = None  # "bfloat16" for autocast (CPU with AVX-512-BF16, or CUDA)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be ≥ 1, got {self.iterations}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.decay_steps < 0:
            raise ValueError(f"decay_steps must be ≥ 0, got {self.decay_steps}")
        if self.gate_weight < 0:
            raise ValueError(f"gate_weight must be ≥ 0, got {self.gate_weight}")
        if self.corr_weight < 0 or not self.temperature > 0:
            raise ValueError(f"need corr_weight ≥ 0 and temperature > 0, got {self.corr_weight}, {self.temperature}")


def lr_factor(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return (step + 1) / s.warmup
    if s.decay_steps:
        start = max(s.warmup, s.iterations - s.decay_steps)
        t = min(1.0, max(0.0, (step - start) / max(1, s.iterations - start)))
    else:
        t = min(1.0, (step - s.warmup) / max(1, s.iterations - s.warmup))
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(model: TTSR, s: TrainSettings, state: dict[str, Any] | None = None) -> torch.optim.Adam:
    """Adam over the stage's parameter groups (main network, texture extractor, relevance gate), resumed
    from ``state`` when given; groups that ``state`` predates (a gate added later) start fresh."""
    lte = list(model.LTE.parameters())
    if s.stage == "correspondence":  # the extractor alone, at the full rate
        groups = [{"params": lte, "lr": s.lr, "base_lr": s.lr}]
    else:
        groups = [{"params": list(model.MainNet.parameters()), "lr": s.lr, "base_lr": s.lr},
                  {"params": lte, "lr": s.lr * s.lte_lr_ratio, "base_lr": s.lr * s.lte_lr_ratio}]
        if model.gate is not None:
            groups.append({"params": list(model.gate.parameters()), "lr": s.lr, "base_lr": s.lr})
    known = len(state["param_groups"]) if state is not None else len(groups)
    opt = torch.optim.Adam(groups[:known], betas=(0.9, 0.999))
    if state is not None:
        opt.load_state_dict(state)
    for group in groups[known:]:
        opt.add_param_group(group)
    return opt


def _batches(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def step_loss(model: TTSR, batch: dict[str, torch.Tensor], s: TrainSettings, critic: torch.nn.Module | None
              ) -> tuple[torch.Tensor, dict[str, float], Any]:
    """The loss of one batch for the configured stage → (loss, its parts, the forward output or None)."""
    parts: dict[str, float] = {}
    loss = torch.zeros((), device=batch["lr"].device)
    out = None
    if s.stage == "sr":
        out = model(batch["lr"], batch["lr_up"], batch["ref"], batch["ref_down_up"], return_attention=True)
        rec = reconstruction_loss(out.sr.float(), batch["hr"])
        parts["rec"] = rec.item()
        loss = loss + rec
        if s.tpl_weight > 0:
            loss = loss + s.tpl_weight * transferal_perceptual_loss(model, out)
        if critic is not None:
            loss = loss - s.adv_weight * critic(out.sr.float()).mean()
        if s.gate_weight > 0 and model.gate is not None and "kind" in batch:
            gate = gate_loss(model, out.soft_attention, batch["corr"], batch["kind"])
            if gate is not None:
                parts["gate"] = gate.item()
                loss = loss + s.gate_weight * gate
    if (s.stage == "correspondence" or s.corr_weight > 0) and "corr" in batch:
        q = model.LTE(batch["lr_up"])[2]
        k = model.LTE(batch["ref_down_up"])[2]
        nce = contrastive_loss(q.float(), k.float(), batch["corr"], queries_per_sample=s.queries_per_sample,
                               temperature=s.temperature)
        parts["nce"] = nce.item()
        loss = loss + (nce if s.stage == "correspondence" else s.corr_weight * nce)
    return loss, parts, out


def train(
    model: TTSR,
    dataset: Dataset,
    settings: TrainSettings,
    out_dir: Path,
    *,
    val_batches: list[dict[str, torch.Tensor]] | None = None,
    pair_val: dict[str, list[dict[str, torch.Tensor]]] | None = None,
    device: torch.device | str = "cpu",
    start_step: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[float]:
    """Run the loop from ``start_step`` to ``settings.iterations``; returns the per-step losses."""
    device = resolve_device(device)
    torch.manual_seed(settings.seed + start_step)
    model.to(device).train()
    opt = make_optimizer(model, settings, optimizer_state)
    critic = critic_opt = None
    if settings.adv_weight > 0 and settings.stage == "sr":
        critic = Discriminator().to(device)
        critic_opt = torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=(0.0, 0.9))
    # Samples are drawn per index, so resuming at step k continues the same stream of crops.
    order = list(range(start_step * settings.batch_size, settings.iterations * settings.batch_size))
    loader = DataLoader(torch.utils.data.Subset(dataset, [i % len(dataset) for i in order]) if order else dataset,
                        batch_size=settings.batch_size, shuffle=False, num_workers=0, drop_last=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train_log.jsonl"
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.iterations, initial=start_step, desc=settings.stage, unit="it", dynamic_ncols=True)
    t0, last_save = time.time(), start_step
    amp = settings.amp_dtype
    step = start_step
    it = _batches(loader)
    while step < settings.iterations:
        batch = {k: v.to(device) for k, v in next(it).items()}
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, settings)
        with torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bfloat16" else torch.float16, enabled=amp is not None):
            loss, parts, out = step_loss(model, batch, settings, critic)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if critic is not None and critic_opt is not None and out is not None:
            fake = out.sr.detach().float()
            d_loss = critic(fake).mean() - critic(batch["hr"]).mean() + gradient_penalty(critic, batch["hr"], fake)
            critic_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            critic_opt.step()
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        record: dict[str, Any] = {"step": step, "loss": losses[-1], **parts, "elapsed_s": round(time.time() - t0, 1)}
        if val_batches and (step % settings.val_every == 0 or step == settings.iterations):
            record["val"] = validate(model, val_batches, device, settings.stage, pair_val)
            logger.info("step %d: %s", step, record["val"])
        if step % 25 == 0 or "val" in record:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if step - last_save >= settings.save_every or step == settings.iterations:
            _save(model, opt, out_dir, step, settings, meta, time.time() - t0)
            last_save = step
    if bar is not None:
        bar.close()
    return losses


def _save(model: TTSR, opt: torch.optim.Optimizer, out_dir: Path, step: int, settings: TrainSettings,
          meta: dict[str, Any] | None, elapsed: float) -> None:
    info = dict(meta or {})
    prev = float(info.get("wall_time_s_before", 0.0))
    info.update({"step": step, "wall_time_s": round(prev + elapsed, 1), "settings": asdict(settings)})
    save_checkpoint(out_dir / "last.safetensors", model, info)
    state = {"step": step, "optimizer": opt.state_dict(), "wall_time_s": prev + elapsed}
    atomic_write(out_dir / "train_state.pt", lambda tmp: torch.save(state, tmp))


def holdout_names(folder: Path, every: int) -> list[str]:
    """Every ``every``-th photo (sorted by name) is kept out of training for evaluation."""
    return [p.name for p in list_images(folder)[::every]] if every > 0 else []


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ttsr_core.training.train",
        description="Train a TTSR model on warped pairs cut from folders of HR photos, real photo pairs, or the "
        "CUFED training layout. --stage correspondence pretrains the texture extractor contrastively; --stage sr "
        "trains end to end. Saves a resumable checkpoint in --out every --save-every steps.",
        epilog="Example: python -m ttsr_core.training.train --stage sr --data data/training data/training-extra "
        "--pairs data/training-pairs/pairs.tsv --pair-prob 0.25 --self-prob 0.1 --gate "
        "--init models/ttsr-lite/ttsr-lite-x4.safetensors --out runs/sr --iterations 100000 --decay-steps 3000. "
        "Resume: add --resume (the same --out).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, nargs="+", help="folders of high-resolution photos; the first one's "
                     "every --holdout-every-th photo is held out")
    src.add_argument("--cufed", type=Path, help="CUFED training folder with input/ and ref/")
    p.add_argument("--pairs", type=Path, nargs="*", default=[],
                   help="pairs.tsv files of real photo pairs (with --data); every 10th pair is held out for validation")
    p.add_argument("--out", type=Path, required=True, help="run folder: last.safetensors, train_state.pt, train_log.jsonl")
    p.add_argument("--stage", choices=STAGES, default="sr", help="sr (default) or correspondence (LTE only)")
    p.add_argument("--preset", default="ttsr-lite", choices=sorted(PRESETS), help="architecture (default: ttsr-lite)")
    p.add_argument("--init", type=Path, help="start from this checkpoint's weights (and architecture)")
    p.add_argument("--gate", action="store_true", help="add the learned relevance gate (net.RelevanceGate) if the "
                   "architecture lacks it")
    p.add_argument("--iterations", type=int, default=TrainSettings.iterations)
    p.add_argument("--decay-steps", type=int, default=0, help="0: cosine decay over the run; N: constant rate, then "
                   "cosine decay over the last N steps")
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--patch", type=int, default=PairSettings.patch, help="HR crop side, multiple of 4 (default 96)")
    p.add_argument("--ref-patch", type=int, default=PairSettings.ref_patch, help="reference side (default 160)")
    p.add_argument("--degradation", choices=sorted(LR_PIPELINES), default=PairSettings.lr_degradation,
                   help="how the LR is made (default mixed: ⅓ clean bicubic, ⅔ album damage)")
    for kind, default, what in (("near", PairSettings.near_prob, "a close warped view of the same photo"),
                                ("far", PairSettings.far_prob, "a far warped view (zoom, rotation, partial overlap)"),
                                ("self", 0.0, "the target's own LR↑ (nothing to transfer)"),
                                ("pair", 0.0, "a real second photo of the scene (--pairs)")):
        p.add_argument(f"--{kind}-prob", type=float, default=default,
                       help=f"share of samples whose reference is {what} (default {default}); the rest: another photo")
    p.add_argument("--texture-tries", type=int, default=PairSettings.texture_tries, help="best-of-N crops by gradient energy (1: uniform)")
    p.add_argument("--lr", type=float, default=TrainSettings.lr)
    p.add_argument("--lte-lr-ratio", type=float, default=TrainSettings.lte_lr_ratio)
    p.add_argument("--warmup", type=int, default=TrainSettings.warmup)
    p.add_argument("--corr-weight", type=float, default=0.0, help="sr stage: weight of the contrastive loss (0: off)")
    p.add_argument("--gate-weight", type=float, default=0.0,
                   help="sr stage: weight of the relevance gate's cross-entropy (open on same-photo views, shut on "
                        "other photos; 0: off)")
    p.add_argument("--queries", type=int, default=TrainSettings.queries_per_sample,
                   help="contrastive loss: query cells drawn per sample (its cost grows with queries × batch²)")
    p.add_argument("--loss", choices=["rec", "rec+tpl", "rec+tpl+adv"], default="rec",
                   help="rec = L1 (TTSR-rec); +tpl transferal perceptual (1e-2); +adv WGAN-GP (1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-every", type=int, default=10, help="keep every Nth photo of the first folder out (0: none)")
    p.add_argument("--samples", type=int, default=1_000_000, help="virtual epoch length of the warped pairs")
    p.add_argument("--save-every", type=int, default=TrainSettings.save_every)
    p.add_argument("--val-every", type=int, default=TrainSettings.val_every)
    p.add_argument("--amp", choices=["bfloat16", "float16"], default=None,
                   help="autocast dtype (default: float32). Meant for CUDA: a CPU without native bf16 "
                        "(avx512_bf16 or AMX) ran bf16 products ~160x slower than float32")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.safetensors + train_state.pt")
    return p


def _model(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[TTSR, int, dict[str, Any] | None]:
    """The model to train (resumed, initialised from --init, or fresh) → (model, start step, optimizer state)."""
    start, opt_state = 0, None
    ckpt = args.out / "last.safetensors"
    if args.resume and ckpt.is_file():
        loaded = load_checkpoint(ckpt)
        model = loaded.model
        state = torch.load(args.out / "train_state.pt", map_location="cpu", weights_only=True)
        start, opt_state = int(state["step"]), state["optimizer"]
        meta["wall_time_s_before"] = float(state.get("wall_time_s", 0.0))
        meta["init"] = loaded.meta.get("init")
        logger.info("resuming %s at step %d", ckpt, start)
    elif args.init:
        loaded = load_checkpoint(args.init)
        model = loaded.model
        meta["init"] = {"name": args.init.name, "sha256": loaded.sha256}
        logger.info("starting from %s (%s)", args.init, loaded.sha256[:12])
    else:
        model = TTSR(preset(args.preset))
    if args.gate and model.gate is None:
        if opt_state is not None:
            raise ValueError("--gate cannot be added to a resumed run: its optimizer state has no gate")
        gated = TTSR(replace(model.config, relevance_gate=True))
        missing, unexpected = gated.load_state_dict(model.state_dict(), strict=False)
        if unexpected or any(not k.startswith("gate.") for k in missing):
            raise ValueError(f"gate added, but weights do not fit: missing {missing}, unexpected {unexpected}")
        model = gated
    return model, start, opt_state


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = TrainSettings(
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, lte_lr_ratio=args.lte_lr_ratio,
        warmup=args.warmup, decay_steps=args.decay_steps, tpl_weight=TPL_WEIGHT if "tpl" in args.loss else 0.0,
        adv_weight=ADV_WEIGHT if "adv" in args.loss else 0.0, stage=args.stage, corr_weight=args.corr_weight,
        gate_weight=args.gate_weight,
        queries_per_sample=args.queries,
        seed=args.seed, save_every=args.save_every, val_every=args.val_every, amp_dtype=args.amp,
    )
    torch.manual_seed(args.seed)
    meta: dict[str, Any] = {"preset": args.preset, "loss": args.loss, "stage": args.stage, "patch": args.patch,
                            "ref_patch": args.ref_patch, "degradation": args.degradation}
    val_batches: list[dict[str, torch.Tensor]] = []
    pair_val: dict[str, list[dict[str, torch.Tensor]]] = {}
    if args.data:
        held = holdout_names(args.data[0], args.holdout_every)
        pair = PairSettings(patch=args.patch, ref_patch=args.ref_patch, texture_tries=args.texture_tries,
                            lr_degradation=args.degradation, near_prob=args.near_prob, far_prob=args.far_prob,
                            self_prob=args.self_prob, pair_prob=args.pair_prob)
        pairs = [pr for tsv in args.pairs for pr in read_photo_pairs(tsv, pair.max_side)]
        held_pairs, train_pairs = pairs[::10], [pr for i, pr in enumerate(pairs) if i % 10]
        paths = [pth for f in args.data for pth in list_images(f) if pth.name not in set(held)]
        logger.info("loading %d training photos from %s", len(paths), ", ".join(map(str, args.data)))
        dataset: Dataset = WarpedPairs([load_photo(pth, pair.max_side) for pth in paths], pair, length=args.samples,
                                       seed=args.seed, pairs=train_pairs)
        meta.update({"data": [d.name for d in args.data], "pairs": [str(t.parent.name) for t in args.pairs],
                     "holdout": held, "holdout_pairs": [pr.name for pr in held_pairs], "photos": len(paths),
                     "train_pairs": len(train_pairs),
                     "shares": {"near": pair.near_prob, "far": pair.far_prob, "self": pair.self_prob, "pair": pair.pair_prob}})
        if held:
            val_batches = holdout_batches(args.data[0], held, pair)
        if held_pairs:
            pair_val = pair_batches(held_pairs, pair)
    else:
        dataset = CUFEDPairs(args.cufed)
        meta["data"] = str(args.cufed)
    model, start, opt_state = _model(args, meta)
    meta["name"] = args.out.name
    train(model, dataset, settings, args.out, val_batches=val_batches, pair_val=pair_val, device=device,
          start_step=start, optimizer_state=opt_state, meta=meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
