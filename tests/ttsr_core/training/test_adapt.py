"""Album adaptation: the step budget, the part that learns, and the caller's model left alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsr_core.model.net import TTSR
from ttsr_core.training.adapt import AdaptPart, AdaptSettings, adapt

from ..conftest import TINY, image

SMALL = dict(patch=32, ref_patch=48, batch_size=2, degradation="bicubic")


def _photos(rng: np.random.Generator) -> list[np.ndarray]:
    return [image(rng, 96, 112), image(rng, 100, 90)]


def _changed(a: TTSR, b: TTSR) -> set[str]:
    sb = b.state_dict()
    return {k for k, v in a.state_dict().items() if not torch.equal(v, sb[k])}


@pytest.mark.parametrize("part, learns, keeps", [
    (AdaptPart.ALL, ("LTE.", "MainNet.SFE."), ()),
    (AdaptPart.MAIN, ("MainNet.SFE.", "MainNet.merge_tail."), ("LTE.",)),
    (AdaptPart.TAIL, ("MainNet.merge_tail.", "MainNet.RB33."), ("LTE.", "MainNet.SFE.", "MainNet.RB11.")),
])
def test_only_the_chosen_part_learns(rng: np.random.Generator, part: AdaptPart, learns: tuple, keeps: tuple) -> None:
    torch.manual_seed(0)
    base = TTSR(TINY).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    steps: list[int] = []
    tuned = adapt(base, _photos(rng), AdaptSettings(steps=3, part=part, lr=1e-2, **SMALL),
                  on_step=lambda step, loss, model: steps.append(step))
    assert steps == [1, 2, 3]
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # the caller's model is untouched
    changed = _changed(tuned, base)
    for prefix in learns:
        assert any(k.startswith(prefix) for k in changed), prefix
    for prefix in keeps:
        assert not any(k.startswith(prefix) for k in changed), prefix
    assert not tuned.training and all(p.requires_grad for p in tuned.parameters())


def test_zero_steps_return_the_same_weights(rng: np.random.Generator) -> None:
    base = TTSR(TINY).eval()
    assert not _changed(adapt(base, _photos(rng), AdaptSettings(steps=0, **SMALL)), base)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="steps"):
        AdaptSettings(steps=-1)
    with pytest.raises(ValueError, match="lr"):
        AdaptSettings(lr=0)
    with pytest.raises(ValueError):
        AdaptSettings(part="lte-only")
