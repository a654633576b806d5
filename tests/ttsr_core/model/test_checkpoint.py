"""Checkpoint formats, strict loading, and the authors' conformance vector."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ttsr_core.config import TTSRConfig
from ttsr_core.model.checkpoint import CheckpointError, CheckpointLayout, infer_config, load_checkpoint, save_checkpoint
from ttsr_core.model.net import TTSR

from ..conftest import TINY

VECTOR = Path(__file__).resolve().parents[3] / "tests" / "data" / "ttsr_official_layout_tiny.pt"


def test_conformance_vector_reproduces_the_authors_outputs() -> None:
    loaded = load_checkpoint(VECTOR)
    assert loaded.layout is CheckpointLayout.AUTHORS
    assert loaded.config == TTSRConfig(num_feat=16, num_block=(1, 1, 1, 1), res_scale=1.0)
    vec = torch.load(VECTOR, weights_only=True)
    i, o = vec["inputs"], vec["outputs"]
    with torch.no_grad():
        out = loaded.model(i["lr"], i["lr_up"], i["ref"], i["ref_down_up"], return_attention=True)
    for name in ("sr", "soft_attention", "texture_lv3", "texture_lv2", "texture_lv1"):
        got = getattr(out, name)
        assert got.shape == o[name].shape, name
        assert (got - o[name]).abs().max() <= 1e-4, f"{name} differs by {(got - o[name]).abs().max():.2e}"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_load_round_trip_is_bit_exact(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(3)
    model = TTSR(TTSRConfig(num_feat=8, num_block=(2, 1, 0, 1), lte_channels=(4, 6, 8), global_skip=True))
    path = save_checkpoint(tmp_path / f"m{suffix}", model, {"name": "tiny", "step": 7})
    loaded = load_checkpoint(path)
    assert loaded.layout is CheckpointLayout.OWN and loaded.config == model.config
    assert loaded.meta["step"] == 7 and loaded.name == "tiny" and len(loaded.sha256) == 64
    ref_state = model.state_dict()
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    assert not list(tmp_path.glob("*.tmp"))


def test_authors_layout_with_prefixes_and_lte_copy(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = TTSR(TINY)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state.update({f"module.LTE_copy.{k[len('LTE.'):]}": v for k, v in model.state_dict().items() if k.startswith("LTE.")})
    torch.save(state, tmp_path / "TTSR.pt")
    loaded = load_checkpoint(tmp_path / "TTSR.pt")
    assert loaded.layout is CheckpointLayout.AUTHORS and loaded.config == TINY
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_infer_config_reads_the_paper_preset_shapes() -> None:
    state = TTSR(TTSRConfig()).state_dict()
    assert infer_config(state) == TTSRConfig()


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = TTSR(TINY).state_dict()
    state.pop("MainNet.conv11_tail.bias")
    state["MainNet.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "broken.pt")
    assert "MainNet.conv11_tail.bias" in str(err.value) and "MainNet.extra.weight" in str(err.value)
    loose = load_checkpoint(tmp_path / "broken.pt", strict=False)
    assert isinstance(loose.model, TTSR)


def test_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # runs at unpickling time if anything unpickles it
            return (Path.touch, (tmp_path / "pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="only plain tensors are ever loaded") as err:
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    # torch's own advice ("weights_only=False ... will likely succeed") must never reach a user.
    assert "weights_only" not in str(err.value) and "likely succeed" not in str(err.value)


def test_missing_and_foreign_files_raise_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a TTSR state dict"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="safetensors or .pt"):
        save_checkpoint(tmp_path / "m.bin", TTSR(TINY))
