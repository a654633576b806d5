"""Train a TTSR model: ``python -m ttsr_core.train --data FOLDER --out runs/NAME``.

Resumable (``--resume``), seeded, with periodic validation against bicubic on held-out crops.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint, save_checkpoint
from .config import PRESETS, preset
from .data import CUFEDPairs, PairSettings, SelfSupervisedPairs, list_images
from .losses import ADV_WEIGHT, TPL_WEIGHT, Discriminator, gradient_penalty, reconstruction_loss, transferal_perceptual_loss
from .net import TTSR

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = 8000
    batch_size: int = 8
    lr: float = 2e-4
    lte_lr_ratio: float = 0.25  # the LTE learns more slowly (paper: 1e-5 vs 1e-4), here from scratch
    min_lr_ratio: float = 0.05  # cosine decay to this fraction of lr
    warmup: int = 200
    tpl_weight: float = 0.0  # 1e-2 in the paper (TTSR); 0 = TTSR-rec
    adv_weight: float = 0.0  # 1e-3 in the paper
    seed: int = 0
    save_every: int = 250
    val_every: int = 500
    amp_dtype: str | None = None  # "bfloat16" for autocast (CPU with AVX-512-BF16, or CUDA)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be ≥ 1, got {self.iterations}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def lr_factor(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return (step + 1) / s.warmup
    t = min(1.0, (step - s.warmup) / max(1, s.iterations - s.warmup))
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(model: TTSR, s: TrainSettings) -> torch.optim.Adam:
    lte = list(model.LTE.parameters())
    main = list(model.MainNet.parameters())
    return torch.optim.Adam(
        [{"params": main, "lr": s.lr, "base_lr": s.lr}, {"params": lte, "lr": s.lr * s.lte_lr_ratio, "base_lr": s.lr * s.lte_lr_ratio}],
        betas=(0.9, 0.999),
    )


def _batches(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean RGB PSNR of a batch in [-1, 1] (a cheap validation signal, not the paper protocol)."""
    mse = ((sr.clamp(-1, 1) - hr) ** 2).mean(dim=(1, 2, 3)) / 4.0  # [-1,1] → [0,1] scale
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


@torch.no_grad()
def validate(model: TTSR, batches: list[dict[str, torch.Tensor]], device: torch.device) -> dict[str, float]:
    model.eval()
    sr_psnr, bic_psnr = [], []
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        sr = model(b["lr"], b["lr_up"], b["ref"], b["ref_down_up"])
        sr_psnr.append(psnr_batch(sr, b["hr"]))
        bic_psnr.append(psnr_batch(b["lr_up"], b["hr"]))
    model.train()
    return {"psnr": float(np.mean(sr_psnr)), "bicubic_psnr": float(np.mean(bic_psnr)),
            "gain_db": float(np.mean(sr_psnr) - np.mean(bic_psnr))}


def train(
    model: TTSR,
    dataset: Dataset,
    settings: TrainSettings,
    out_dir: Path,
    *,
    val_batches: list[dict[str, torch.Tensor]] | None = None,
    device: torch.device | str = "cpu",
    start_step: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[float]:
    """Run the loop from ``start_step`` to ``settings.iterations``; returns the per-step losses."""
    device = torch.device(device)
    torch.manual_seed(settings.seed + start_step)
    model.to(device).train()
    opt = make_optimizer(model, settings)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    critic = critic_opt = None
    if settings.adv_weight > 0:
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

        bar = tqdm(total=settings.iterations, initial=start_step, desc="train", unit="it", dynamic_ncols=True)
    t0, last_save = time.time(), start_step
    amp = settings.amp_dtype
    step = start_step
    it = _batches(loader)
    while step < settings.iterations:
        batch = {k: v.to(device) for k, v in next(it).items()}
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, settings)
        with torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bfloat16" else torch.float16, enabled=amp is not None):
            out = model(batch["lr"], batch["lr_up"], batch["ref"], batch["ref_down_up"], return_attention=True)
            loss = reconstruction_loss(out.sr.float(), batch["hr"])
            if settings.tpl_weight > 0:
                loss = loss + settings.tpl_weight * transferal_perceptual_loss(model, out)
            if critic is not None:
                loss = loss - settings.adv_weight * critic(out.sr.float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if critic is not None and critic_opt is not None:
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
        record: dict[str, Any] = {"step": step, "loss": losses[-1], "elapsed_s": round(time.time() - t0, 1)}
        if val_batches and (step % settings.val_every == 0 or step == settings.iterations):
            record["val"] = validate(model, val_batches, device)
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
    info.update({"step": step, "wall_time_s": round(prev + elapsed, 1), "settings": settings.__dict__})
    save_checkpoint(out_dir / "last.safetensors", model, info)
    tmp = out_dir / "train_state.pt.tmp"
    torch.save({"step": step, "optimizer": opt.state_dict(), "wall_time_s": prev + elapsed}, tmp)
    os.replace(tmp, out_dir / "train_state.pt")


def holdout_names(folder: Path, every: int) -> list[str]:
    """Every ``every``-th photo (sorted by name) is kept out of training for evaluation."""
    return [p.name for p in list_images(folder)[::every]] if every > 0 else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ttsr_core.train",
        description="Train a TTSR model on self-supervised pairs cut from a folder of HR photos "
        "(or the CUFED training layout). Saves a resumable checkpoint in --out every --save-every steps.",
        epilog="Example: python -m ttsr_core.train --data data/training --out runs/ttsr-lite --preset ttsr-lite "
        "--iterations 8000 --patch 96. Resume: add --resume.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder of high-resolution photos (self-supervised pairs)")
    src.add_argument("--cufed", type=Path, help="CUFED training folder with input/ and ref/")
    p.add_argument("--out", type=Path, required=True, help="run folder: last.safetensors, train_state.pt, train_log.jsonl")
    p.add_argument("--preset", default="ttsr-lite", choices=sorted(PRESETS), help="architecture (default: ttsr-lite)")
    p.add_argument("--iterations", type=int, default=TrainSettings.iterations)
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--patch", type=int, default=160, help="HR crop side, multiple of 4 (default 160)")
    p.add_argument("--texture-tries", type=int, default=4, help="best-of-N crops by gradient energy (1: uniform)")
    p.add_argument("--lr", type=float, default=TrainSettings.lr)
    p.add_argument("--lte-lr-ratio", type=float, default=TrainSettings.lte_lr_ratio)
    p.add_argument("--loss", choices=["rec", "rec+tpl", "rec+tpl+adv"], default="rec",
                   help="rec = L1 (TTSR-rec); +tpl transferal perceptual (1e-2); +adv WGAN-GP (1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-every", type=int, default=10, help="keep every Nth photo out of training (0: none)")
    p.add_argument("--samples", type=int, default=200_000, help="virtual epoch length of the self-supervised set")
    p.add_argument("--save-every", type=int, default=TrainSettings.save_every)
    p.add_argument("--val-every", type=int, default=TrainSettings.val_every)
    p.add_argument("--amp", choices=["bfloat16", "float16"], default=None,
                   help="autocast dtype (default: float32). Meant for CUDA: a CPU without native bf16 "
                        "(avx512_bf16 or AMX) ran bf16 products ~160x slower than float32")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.safetensors + train_state.pt")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    settings = TrainSettings(
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, lte_lr_ratio=args.lte_lr_ratio,
        tpl_weight=TPL_WEIGHT if "tpl" in args.loss else 0.0, adv_weight=ADV_WEIGHT if "adv" in args.loss else 0.0,
        seed=args.seed, save_every=args.save_every, val_every=args.val_every, amp_dtype=args.amp,
    )
    torch.manual_seed(args.seed)
    meta: dict[str, Any] = {"preset": args.preset, "loss": args.loss, "patch": args.patch}
    val_batches: list[dict[str, torch.Tensor]] = []
    if args.data:
        held = holdout_names(args.data, args.holdout_every)
        pair = PairSettings(patch=args.patch, ref_patch=args.patch, texture_tries=args.texture_tries)
        dataset: Dataset = SelfSupervisedPairs.from_folder(args.data, pair, exclude=held, length=args.samples, seed=args.seed)
        meta.update({"data": str(args.data), "holdout": held})
        if held:
            val = SelfSupervisedPairs.from_folder(args.data, pair, exclude=[n for n in (p.name for p in list_images(args.data)) if n not in held], length=32, seed=12345)
            val_batches = [{k: torch.stack([val[i + j][k] for j in range(8)]) for k in val[0]} for i in range(0, 32, 8)]
    else:
        dataset = CUFEDPairs(args.cufed)
        meta["data"] = str(args.cufed)
    start, opt_state = 0, None
    ckpt = args.out / "last.safetensors"
    if args.resume and ckpt.is_file():
        loaded = load_checkpoint(ckpt)
        model = loaded.model
        state = torch.load(args.out / "train_state.pt", map_location="cpu", weights_only=True)
        start, opt_state = int(state["step"]), state["optimizer"]
        meta["wall_time_s_before"] = float(state.get("wall_time_s", 0.0))
        logger.info("resuming %s at step %d", ckpt, start)
    else:
        model = TTSR(preset(args.preset))
    meta["name"] = args.out.name
    train(model, dataset, settings, args.out, val_batches=val_batches, device=device, start_step=start,
          optimizer_state=opt_state, meta=meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
