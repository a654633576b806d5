"""An album's own refsr.toml, and the scan settings of one album: flags over refsr.toml over defaults."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.options import toml_keys
from flows.settings import Settings
from pipeline.roles import DEFAULT_REF_RATIO
from pipeline.scan import ScanSettings

ALBUM_CONFIG_NAME = "refsr.toml"


@dataclass(frozen=True)
class AlbumConfig:
    """`<album>/refsr.toml`: the settings declared with a refsr.toml key, as this album sets them.

    ```toml
    [scan]
    min_ref_side = 480     # long side ≥ this: a reference candidate
    max_target_side = 320  # long side ≤ this: an enhancement target
    # or, instead of the thresholds:
    ref_ratio = 3.0        # a reference is at least 3x its target's long side
    ```
    """

    values: Mapping[str, Any] = field(default_factory=dict)  # setting name -> the album's value

    def get(self, name: str) -> Any:
        return self.values.get(name)

    @classmethod
    def read(cls, album_root: Path) -> AlbumConfig:
        path = Path(album_root) / ALBUM_CONFIG_NAME
        if not path.is_file():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read album config {str(path)!r}: {exc}") from exc
        scan = data.get("scan", {})
        if not isinstance(scan, dict):
            raise ValueError(f"{str(path)!r}: [scan] must be a table, got {scan!r}")
        keys = toml_keys(Settings, "scan")
        unknown = set(scan) - set(keys)
        if unknown:
            raise ValueError(f"{str(path)!r}: unknown [scan] keys {sorted(unknown)}")
        if "ref_ratio" in scan and len(scan) > 1:
            raise ValueError(f"{str(path)!r}: [scan] sets ref_ratio and thresholds; keep one rule")
        for key, value in scan.items():
            try:
                keys[key].option.check(f"[scan] {key}", value)
            except ValueError as exc:
                raise ValueError(f"{str(path)!r}: {exc}") from None
        return cls({keys[key].name: value for key, value in scan.items()})


def scan_settings(settings: Settings, album_root: Path) -> ScanSettings:
    """ScanSettings for one album: flags over refsr.toml over defaults; our output folder excluded.

    Roles: thresholds when any is given (flag or refsr.toml) and no --ref-ratio flag is; else the
    relative rule with --ref-ratio, refsr.toml's ref_ratio or DEFAULT_REF_RATIO.
    """
    album_root = Path(album_root).resolve()
    config = AlbumConfig.read(album_root)
    base = ScanSettings()
    flag_thresholds = settings.min_ref_side is not None or settings.max_target_side is not None
    toml_thresholds = config.get("min_ref_side") is not None or config.get("max_target_side") is not None
    if settings.ref_ratio is not None:
        ratio: float | None = settings.ref_ratio
    elif flag_thresholds or toml_thresholds:
        ratio = None
    else:
        ratio = config.get("ref_ratio") or DEFAULT_REF_RATIO
    min_ref = settings.min_ref_side or config.get("min_ref_side") or base.min_ref_side
    max_target = settings.max_target_side or config.get("max_target_side") or base.max_target_side
    exclude = list(base.exclude)
    out = settings.output_dir(album_root).resolve()
    if out == album_root:
        raise ValueError(f"the output folder cannot be the album itself: {str(out)!r}")
    if out.is_relative_to(album_root) and out.name not in exclude:
        # Scans exclude by directory name at any depth; the output folder must never be read back.
        exclude.append(out.name)
    return ScanSettings(min_ref_side=min_ref, max_target_side=max_target, ref_ratio=ratio, exclude=tuple(exclude))
