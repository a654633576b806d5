"""Training pairs, a few optimisation steps on a tiny config, resume, and the metric code."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttsr_core.metrics import psnr_y, rgb_to_y, ssim_y
from ttsr_core.model.checkpoint import load_checkpoint, save_checkpoint
from ttsr_core.model.inference import resize_bicubic
from ttsr_core.model.net import TTSR
from ttsr_core.training import evaluate as evaluate_mod
from ttsr_core.training import train as train_mod
from ttsr_core.training.data import CUFEDPairs, PairSettings, WarpedPairs, make_sample
from ttsr_core.training.degradations import degrade

from ..conftest import TINY, image


def _photo(rng: np.random.Generator, tint: tuple[int, int, int], size: int = 120) -> np.ndarray:
    img = image(rng, size, size).astype(np.int16)
    return np.clip(img // 3 + np.array(tint), 0, 255).astype(np.uint8)


SMALL = PairSettings(patch=32, ref_patch=48, lr_degradation="bicubic")


def test_sample_is_the_papers_five_tensors(rng: np.random.Generator) -> None:
    hr, ref = image(rng, 32, 40), image(rng, 24, 28)
    s = make_sample(hr, ref)
    assert s["lr"].shape == (3, 8, 10) and s["lr_up"].shape == (3, 32, 40) and s["hr"].shape == (3, 32, 40)
    assert s["ref"].shape == (3, 24, 28) and s["ref_down_up"].shape == (3, 24, 28)
    lr = resize_bicubic(hr, 10, 8)  # LR = PIL bicubic ↓4 of the HR crop, unless a degraded LR is given
    assert torch.allclose(s["lr"], torch.from_numpy(lr.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    assert float(s["hr"].min()) >= -1 and float(s["hr"].max()) <= 1
    jpeg = degrade(hr, "jpeg75")
    assert torch.allclose(make_sample(hr, ref, jpeg)["lr"], torch.from_numpy(jpeg.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    with pytest.raises(ValueError, match="not ¼"):
        make_sample(hr, ref, lr[:4])


def test_reference_comes_from_the_same_photo_or_another(rng: np.random.Generator) -> None:
    red, blue = _photo(rng, (150, 20, 20)), _photo(rng, (20, 20, 150))

    def mean_red_minus_blue(t: torch.Tensor) -> float:
        return float(t[0].mean() - t[2].mean())

    plain = {**SMALL.__dict__, "ref_photometry": False}
    same = WarpedPairs([red, blue], PairSettings(**{**plain, "near_prob": 0.5, "far_prob": 0.5}), length=20, seed=1)
    other = WarpedPairs([red, blue], PairSettings(**{**plain, "near_prob": 0.0, "far_prob": 0.0}), length=20, seed=1)
    for i in range(20):
        a, b = same[i], other[i]
        assert np.sign(mean_red_minus_blue(a["hr"])) == np.sign(mean_red_minus_blue(a["ref"]))
        assert np.sign(mean_red_minus_blue(b["hr"])) != np.sign(mean_red_minus_blue(b["ref"]))
        assert (b["corr"] == -1).all()


def test_own_lr_reference_is_the_targets_lr_up(rng: np.random.Generator) -> None:
    """A "self" sample: the target's LR is the centre of the reference region's LR, the reference its LR↑."""
    photo = _photo(rng, (80, 60, 40), 160)
    settings = PairSettings(**{**SMALL.__dict__, "lr_degradation": "album", "near_prob": 0.0, "far_prob": 0.0,
                               "self_prob": 1.0})
    ds = WarpedPairs([photo], settings, length=6, seed=3)
    for i in range(6):
        s = ds[i]
        assert (s["corr"] == -1).all()
        lr_up = resize_bicubic(((s["lr"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8), 32, 32)
        ref = ((s["ref"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.int16)
        inset = (48 - 32) // 2 // 8 * 8
        # Away from the crop's border (bicubic reaches 2 LR pixels = 8 HR pixels), the reference is LR↑.
        core = np.abs(ref[inset + 8 : inset + 24, inset + 8 : inset + 24] - lr_up[8:24, 8:24].astype(np.int16))
        assert core.max() <= 2


def test_decay_steps_hold_the_rate_then_decay() -> None:
    s = train_mod.TrainSettings(iterations=1000, warmup=10, decay_steps=200, min_lr_ratio=0.1)
    assert train_mod.lr_factor(5, s) == pytest.approx(0.6)
    assert train_mod.lr_factor(100, s) == train_mod.lr_factor(800, s) == 1.0
    assert train_mod.lr_factor(900, s) == pytest.approx(0.55)
    assert train_mod.lr_factor(1000, s) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay_steps"):
        train_mod.TrainSettings(decay_steps=-1)


def test_pair_settings_validation(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="sum ≤ 1"):
        PairSettings(near_prob=0.5, far_prob=0.3, self_prob=0.3)
    with pytest.raises(ValueError, match="no photo pairs"):
        WarpedPairs([_photo(rng, (1, 2, 3))], PairSettings(**{**SMALL.__dict__, "near_prob": 0.4, "far_prob": 0.4, "pair_prob": 0.2}))
    with pytest.raises(ValueError, match="multiple of 4"):
        PairSettings(patch=30)
    with pytest.raises(ValueError, match="unknown LR degradation"):
        PairSettings(lr_degradation="vhs")


def test_cufed_layout(tmp_path: Path, rng: np.random.Generator) -> None:
    for sub in ("input", "ref"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        Image.fromarray(image(rng, 40, 42)).save(tmp_path / "input" / f"{i:03d}.png")
        Image.fromarray(image(rng, 36, 48)).save(tmp_path / "ref" / f"{i:03d}.png")
    ds = CUFEDPairs(tmp_path)
    assert len(ds) == 2 and ds[0]["hr"].shape == (3, 40, 40) and ds[0]["ref"].shape == (3, 36, 48)
    with pytest.raises(ValueError, match="input/ and ref/"):
        CUFEDPairs(tmp_path / "input")


def _photos(rng: np.random.Generator, size: int = 96) -> list[np.ndarray]:
    return [_photo(rng, (60, 80, 40), size), _photo(rng, (30, 50, 90), size)]


def test_a_few_steps_reduce_the_loss(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    # length == batch size: the same batch every step, so the loss must fall.
    ds = WarpedPairs(_photos(rng), SMALL, length=4, seed=0)
    settings = train_mod.TrainSettings(iterations=40, batch_size=4, lr=2e-3, warmup=1, save_every=20, val_every=1000)
    losses = train_mod.train(TTSR(TINY), ds, settings, tmp_path, progress=False)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "train_state.pt").is_file()


def test_correspondence_stage_trains_the_extractor_alone(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    ds = WarpedPairs(_photos(rng), PairSettings(**{**SMALL.__dict__, "near_prob": 1.0, "far_prob": 0.0}), length=4)
    model = TTSR(TINY)
    main_before = {k: v.clone() for k, v in model.MainNet.state_dict().items()}
    lte_before = {k: v.clone() for k, v in model.LTE.state_dict().items()}
    settings = train_mod.TrainSettings(iterations=60, batch_size=4, lr=5e-3, warmup=1, stage="correspondence",
                                       save_every=100, val_every=1000)
    losses = train_mod.train(model, ds, settings, tmp_path, progress=False)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert all(torch.equal(v, main_before[k]) for k, v in model.MainNet.state_dict().items())
    assert any(not torch.equal(v, lte_before[k]) for k, v in model.LTE.state_dict().items())
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all("nce" in r and "rec" not in r for r in log)


def test_optional_losses_run(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    ds = WarpedPairs(_photos(rng), SMALL, length=4)
    settings = train_mod.TrainSettings(iterations=2, batch_size=2, tpl_weight=1e-2, adv_weight=1e-3, corr_weight=0.1,
                                       save_every=10)
    model = TTSR(TINY)
    losses = train_mod.train(model, ds, settings, tmp_path, progress=False)
    assert all(math.isfinite(x) for x in losses)
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    loss, parts, _ = train_mod.step_loss(model, batch, settings, critic=None)
    assert set(parts) == {"rec", "nce"} and float(loss.detach()) > parts["rec"]  # the contrastive term is added


def test_cli_trains_and_resumes(tmp_path: Path, rng: np.random.Generator) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, tint in enumerate([(60, 80, 40), (30, 50, 90), (90, 20, 20)]):
        Image.fromarray(_photo(rng, tint, 80)).save(photos / f"p{i}.png")
    out = tmp_path / "run"
    common = ["--data", str(photos), "--out", str(out), "--patch", "32", "--ref-patch", "48", "--batch-size", "2",
              "--holdout-every", "3", "--save-every", "2", "--val-every", "2", "--threads", "1", "--degradation", "album"]
    # The tiny architecture stands in for a preset through a saved checkpoint: --init takes its config.
    save_checkpoint(tmp_path / "tiny.safetensors", TTSR(TINY), {"step": 0})
    assert train_mod.main([*common, "--iterations", "2", "--init", str(tmp_path / "tiny.safetensors")]) == 0
    assert train_mod.main([*common, "--iterations", "4", "--resume"]) == 0
    with pytest.raises(ValueError, match="--gate cannot be added to a resumed run"):
        train_mod.main([*common, "--iterations", "5", "--resume", "--gate"])
    loaded = load_checkpoint(out / "last.safetensors")
    assert loaded.meta["step"] == 4 and loaded.meta["holdout"] == ["p0.png"] and loaded.config == TINY
    assert loaded.meta["degradation"] == "album" and loaded.meta["init"]["name"] == "tiny.safetensors"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("val" in r and "gain_db" in r["val"] and "matching_accuracy" in r["val"] for r in log)


def test_psnr_matches_a_hand_computation() -> None:
    a = np.zeros((12, 12, 3), np.uint8)
    b = np.full((12, 12, 3), 10, np.uint8)
    dy = (65.481 + 128.553 + 24.966) * 10 / 255  # BT.601 luma of a grey step of 10
    assert psnr_y(a, b, border=4) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-9)
    assert psnr_y(a, a) == math.inf
    assert rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0] == pytest.approx(235.0, abs=1e-3)


def test_border_crop_ignores_the_border() -> None:
    a = np.full((20, 20, 3), 100, np.uint8)
    b = a.copy()
    b[:4] = 0  # differs only inside the 4-pixel border
    assert psnr_y(a, b, border=4) == math.inf
    assert psnr_y(a, b, border=0) < 30


def test_ssim_matches_hand_computed_cases() -> None:
    a = np.full((24, 24, 3), 100, np.uint8)
    b = np.full((24, 24, 3), 50, np.uint8)
    assert ssim_y(a, a) == pytest.approx(1.0)
    # Constant images: variances are 0, so SSIM = (2 μx μy + C1) / (μx² + μy² + C1).
    mx, my = rgb_to_y(a)[0, 0], rgb_to_y(b)[0, 0]
    c1 = (0.01 * 255) ** 2
    assert ssim_y(a, b) == pytest.approx((2 * mx * my + c1) / (mx**2 + my**2 + c1), rel=1e-9)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_y(a, b[:20])


def test_evaluate_cli_reports_four_rows_per_lr_degradation(tmp_path: Path, rng: np.random.Generator,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "validation"
    folder.mkdir()
    for name in ("t1", "r1", "t2", "r2"):
        Image.fromarray(image(rng, 48, 52)).save(folder / f"{name}.png")
    (folder / "pairs.tsv").write_text("t1.png\tr1.png\tnote\nt2.png\tr2.png\tnote\n")
    save_checkpoint(tmp_path / "m.safetensors", TTSR(TINY))
    assert evaluate_mod.main(["--model", str(tmp_path / "m.safetensors"), "--pairs", str(folder / "pairs.tsv"),
                              "--json", str(tmp_path / "e.json")]) == 0
    table = capsys.readouterr().out
    for row in evaluate_mod.ROWS:
        assert row in table
    assert "LR = bicubic" in table and "LR = jpeg75" in table
    data = json.loads((tmp_path / "e.json").read_text())["validation"]
    clean, jpeg = data["bicubic"], data["jpeg75"]
    assert len(clean["pairs"]) == 2 and clean["mean"]["bicubic"]["psnr"] > 10
    # The JPEG row's bicubic baseline is the bicubic of the JPEG: a different (lower) figure.
    assert jpeg["mean"]["bicubic"]["psnr"] < clean["mean"]["bicubic"]["psnr"]
    assert set(clean["summary"]) == {"gain_db", "right_minus_wrong_db", "right_minus_self_db", "self_minus_wrong_db",
                                     "right_wins", "fidelity_at_least_bicubic", "pairs"}
    assert all(r["model + reference"]["lr_psnr"] > 0 for r in clean["pairs"])
    with pytest.raises(SystemExit):
        evaluate_mod.main(["--model", str(tmp_path / "m.safetensors"), "--pairs", str(folder / "pairs.tsv"),
                           "--degradations", "vhs"])


def test_cli_adds_the_gate_and_trains_on_real_pairs(tmp_path: Path, rng: np.random.Generator) -> None:
    photos, pairs = tmp_path / "photos", tmp_path / "pairs"
    photos.mkdir()
    pairs.mkdir()
    for i, tint in enumerate([(60, 80, 40), (30, 50, 90)]):
        Image.fromarray(_photo(rng, tint, 80)).save(photos / f"p{i}.png")
    for i in range(10):
        scene = _photo(rng, (20 * i, 40, 60), 96)
        Image.fromarray(scene[:80]).save(pairs / f"a{i}.png")
        Image.fromarray(scene[8:88]).save(pairs / f"b{i}.png")
    (pairs / "pairs.tsv").write_text("".join(f"a{i}.png\tb{i}.png\tsynthetic\n" for i in range(10)))
    save_checkpoint(tmp_path / "tiny.safetensors", TTSR(TINY), {"step": 0})
    out = tmp_path / "run"
    assert train_mod.main(["--data", str(photos), "--pairs", str(pairs / "pairs.tsv"), "--out", str(out),
                           "--patch", "32", "--ref-patch", "48", "--batch-size", "2", "--holdout-every", "2",
                           "--pair-prob", "0.4", "--self-prob", "0.2", "--near-prob", "0.2", "--far-prob", "0.1",
                           "--gate", "--init", str(tmp_path / "tiny.safetensors"), "--iterations", "2",
                           "--val-every", "2", "--threads", "1", "--decay-steps", "1", "--gate-weight", "0.1"]) == 0
    loaded = load_checkpoint(out / "last.safetensors")
    assert loaded.config.relevance_gate and loaded.model.gate is not None
    assert loaded.meta["train_pairs"] == 9 and loaded.meta["holdout_pairs"] == ["a0→b0"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    val = [r["val"] for r in log if "val" in r][-1]
    assert {"pair_right_gain_db", "pair_wrong_gain_db"} <= set(val)


def test_gate_loss_opens_on_same_photo_views_and_shuts_on_other_photos() -> None:
    from dataclasses import replace

    from ttsr_core.training.data import SAMPLE_KINDS
    from ttsr_core.training.losses import gate_loss

    model = TTSR(replace(TINY, relevance_gate=True))
    soft = torch.full((2, 1, 3, 3), 0.5)
    corr = torch.full((2, 3, 3, 2), -1, dtype=torch.long)
    corr[0, :2] = 1  # sample 0: a near view showing its first two rows
    kind = torch.tensor([SAMPLE_KINDS.index("near"), SAMPLE_KINDS.index("other")])
    loss = gate_loss(model, soft, corr, kind)
    loss.backward()
    # 6 positions want the gate open, 9 want it shut, all at the same relevance: a descent step raises
    # the threshold (closes the gate).
    assert model.gate.shift.grad < 0
    only_self = torch.tensor([SAMPLE_KINDS.index("self")] * 2)
    assert gate_loss(model, soft, corr, only_self) is None  # nothing labelled, no loss
    settings = train_mod.TrainSettings(iterations=1, batch_size=2, gate_weight=0.1)
    assert settings.gate_weight == 0.1
    with pytest.raises(ValueError, match="gate_weight"):
        train_mod.TrainSettings(gate_weight=-1.0)


def test_the_gate_learns_and_a_run_from_before_it_learned_resumes() -> None:
    from dataclasses import replace

    model = TTSR(replace(TINY, relevance_gate=True))
    s = train_mod.TrainSettings(iterations=10, batch_size=2)
    opt = train_mod.make_optimizer(model, s)
    assert any(p is model.gate.shift for g in opt.param_groups for p in g["params"])
    old = torch.optim.Adam(opt.param_groups[:2])  # a state saved when only main and LTE learned
    resumed = train_mod.make_optimizer(model, s, old.state_dict())
    assert len(resumed.param_groups) == 3 and resumed.param_groups[2]["params"][0] is model.gate.scale
