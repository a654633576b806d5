"""The relative role rule: which photos are targets and which lend texture, from the album's own sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.roles import DEFAULT_REF_RATIO, RelativeRoles, no_reference_reason
from pipeline.scan import ScanSettings, scan_album
from pipeline.vocabulary import PhotoRole

T, R, N = PhotoRole.target, PhotoRole.reference, PhotoRole.neither


@pytest.mark.parametrize(("sides", "expected"), [
    ({"phone": 4000, "chat": 1000}, {"phone": R, "chat": T}),  # the first album
    ({"scan": 1300, "thumb": 320}, {"scan": R, "thumb": T}),  # and its second
    ({"a": 1000, "b": 1300}, {"a": N, "b": N}),  # nothing twice the size of anything: no roles
    ({"big": 4000, "mid": 1000, "small": 250}, {"big": R, "mid": T, "small": T}),  # both-capable → target
    ({"only": 800}, {"only": N}),
])
def test_roles_follow_the_ratio(sides: dict[str, int], expected: dict[str, PhotoRole]) -> None:
    assert RelativeRoles(DEFAULT_REF_RATIO).assign(sides) == expected


def test_pair_rule_and_bounds() -> None:
    rule = RelativeRoles(2.0)
    assert rule.can_lend(640, 320) and not rule.can_lend(639, 320)
    for bad in (1.0, 0.5, 65, True, "2"):
        with pytest.raises(ValueError, match="ref_ratio"):
            RelativeRoles(bad)  # type: ignore[arg-type]


def test_no_reference_reasons_name_the_setting() -> None:
    assert "--min-ref-side" in no_reference_reason(None, 320, [], 1600)
    text = no_reference_reason(2.0, 320, [600], None)
    assert "needs >= 640 px" in text and "largest reference is 600 px" in text and "--ref-ratio" in text


def _save(path: Path, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side * 3 // 4, side, 3), 128, np.uint8)).save(path)


def test_scan_with_a_ratio_classifies_the_album_as_a_whole(tmp_path: Path) -> None:
    _save(tmp_path / "big.png", 400)
    _save(tmp_path / "small.png", 100)
    _save(tmp_path / "mid.png", 150)
    first = scan_album(tmp_path, {}, ScanSettings(ref_ratio=2.0))
    roles = {e.rel_path: e.role for e in first.entries}
    assert roles == {"big.png": R, "small.png": T, "mid.png": T}
    # The fixed thresholds (the default ScanSettings: references >= 1600 px) make every photo a
    # target with no reference at all: the album the issue saw as "every target no-reference".
    fixed = scan_album(tmp_path, {}, ScanSettings())
    assert {e.role for e in fixed.entries} == {T}
