"""Loading and saving TTSR checkpoints: the project's self-describing format and the authors' layout."""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

import torch

from durable.files import atomic_write, sha256_file
from ttsr_core.config import AUTHORS_FIRST_KEY, CHECKPOINT_FORMAT, TTSRConfig
from ttsr_core.model.net import TTSR

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: unreadable, of an unknown layout, or mismatched keys."""


class CheckpointLayout(StrEnum):
    OWN = "refsr"  # config + weights, written by save_checkpoint
    AUTHORS = "authors"  # flat MainNet.* / LTE.* state dict as published with TTSR


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: TTSR
    config: TTSRConfig
    layout: CheckpointLayout
    sha256: str
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.stem)


def save_checkpoint(path: str | os.PathLike[str], model: TTSR, meta: Mapping[str, Any] | None = None) -> Path:
    """Write config + weights atomically. ``.safetensors`` (preferred) or ``.pt`` by extension.

    The ``.pt`` form is a plain dict of tensors and strings, loadable with ``weights_only=True``.
    """
    path = Path(path)
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"checkpoint path must end in .safetensors or .pt, got {path}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "config": model.config.to_json(),
              "meta": json.dumps(dict(meta or {}), sort_keys=True, default=str)}

    def write(tmp: Path) -> None:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata=header)
        else:
            torch.save({**header, "state_dict": state}, tmp)

    return atomic_write(path, write)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and header of a checkpoint file, without unpickling anything arbitrary."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read safetensors checkpoint {path}: {exc}") from exc
        return tensors, header
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_refusal(exc)}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        header = {k: v for k, v in obj.items() if k != "state_dict"}
        return dict(obj["state_dict"]), header
    if "model" in obj and isinstance(obj["model"], dict):
        return dict(obj["model"]), {k: v for k, v in obj.items() if k != "model"}
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def _refusal(exc: Exception) -> str:
    """Why torch refused a file, without torch's advice to retry with weights_only=False.

    That advice means running whatever code the file carries; a checkpoint from an album tool
    must never be unpickled, so the message says what the file holds and stops there.
    """
    text = " ".join(str(exc).split())
    if "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+|WeightsUnpickler error: [^.]*)",
                          text)
        detail = f" ({found.group(1)})" if found else ""
        return ("it holds Python objects besides tensors, and only plain tensors are ever loaded" + detail
                + "; use a .safetensors checkpoint or one saved as a plain dict of tensors")
    return f"not a readable checkpoint ({type(exc).__name__}: {text[:200]})"


def _clean_authors_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel) and drop ``LTE_copy.*`` (the perceptual-loss twin)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        key = key.replace(".module.", ".")
        if key.startswith("LTE_copy."):
            continue
        out[key] = value
    return out


def infer_config(state: Mapping[str, torch.Tensor], res_scale: float = 1.0) -> TTSRConfig:
    """Architecture from tensor shapes of an authors'-layout state dict."""
    try:
        num_feat = state[AUTHORS_FIRST_KEY].shape[0]
        lte = tuple(state[f"LTE.{k}.weight"].shape[0] for k in ("slice1.0", "slice2.5", "slice3.10"))
    except KeyError as exc:
        raise CheckpointError(f"not a TTSR state dict: missing {exc.args[0]!r}") from None

    def count(prefix: str) -> int:
        pat = re.compile(rf"^MainNet\.{re.escape(prefix)}\.(\d+)\.")
        found = {int(m.group(1)) for k in state if (m := pat.match(k))}
        return max(found) + 1 if found else 0

    blocks = (count("SFE.RBs"), count("RB11"), count("RB21"), count("RB31"))
    return TTSRConfig(num_feat=num_feat, num_block=blocks, res_scale=res_scale, lte_channels=lte)  # type: ignore[arg-type]


def _authors_res_scale(header: Mapping[str, Any]) -> float:
    cfg = header.get("config")
    if isinstance(cfg, dict) and "res_scale" in cfg:
        return float(cfg["res_scale"])
    return 1.0


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", strict: bool = True
) -> LoadedCheckpoint:
    """Load a TTSR model from our own checkpoint or from the authors' published ``TTSR.pt``.

    Strict by default: missing or unexpected keys (or wrong shapes) raise :class:`CheckpointError`
    listing them. Only tensors are ever deserialised (safetensors or ``weights_only=True``).
    """
    path = Path(path)
    tensors, header = _read(path)
    if header.get("format") == CHECKPOINT_FORMAT:
        layout = CheckpointLayout.OWN
        config_raw = header["config"]
        config = TTSRConfig.from_dict(json.loads(config_raw) if isinstance(config_raw, str) else config_raw)
        meta_raw = header.get("meta") or "{}"
        meta = json.loads(meta_raw) if isinstance(meta_raw, str) else dict(meta_raw)
        state = tensors
    else:
        layout = CheckpointLayout.AUTHORS
        state = _clean_authors_keys(tensors)
        config = infer_config(state, _authors_res_scale(header))
        meta = {"name": path.stem, "source": "authors' layout, config inferred from shapes"}
    model = TTSR(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if strict and (missing or unexpected or wrong_shape):
        details = []
        if missing:
            details.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}{' …' if len(missing) > 20 else ''}")
        if unexpected:
            details.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}{' …' if len(unexpected) > 20 else ''}")
        if wrong_shape:
            details.append("shape mismatches: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong_shape[:10]))
        raise CheckpointError(f"checkpoint {path} does not match {config}: " + "; ".join(details))
    load = {k: v for k, v in state.items() if k in expected and k not in wrong_shape}
    model.load_state_dict(load, strict=False)
    model.to(device).eval()
    return LoadedCheckpoint(model, config, layout, sha256_file(path), path, meta)
