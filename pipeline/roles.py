"""Which photos of an album are targets and which lend texture: fixed thresholds or the relative `ref_ratio` rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.vocabulary import PhotoRole

# Why 2: the model works at x4, so a target's output is four times its long side. A reference at
# least twice the target's long side still holds real detail at half the output's scale or finer,
# which is what the texture search copies; below 2x the reference is itself little more than an
# upscale of the target's own level of detail, and a photo of about the same size lends nothing a
# bicubic enlargement would not. Album mixes seen in practice (4000/1000 px phone photos and chat
# copies, 1300/320 px thumbnails) sit at ratio ~4 and pass with room to spare.
DEFAULT_REF_RATIO = 2.0


def long_side(width: int, height: int) -> int:
    return max(int(width), int(height))


@dataclass(frozen=True)
class RelativeRoles:
    """A photo may lend texture to a target when its long side is at least `ratio` times the target's.

    Over a whole album: a target is a photo for which a photo `ratio` times larger exists; a
    reference is a photo `ratio` times larger than some other photo and not itself a target. A
    photo that could be both is a target (the user asked for small photos to be enhanced); the
    pair rule (`can_lend`) still applies to every target's candidates.
    """

    ratio: float = DEFAULT_REF_RATIO

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 1 < self.ratio <= 64:
            raise ValueError(f"ref_ratio must be a number in (1, 64], got {self.ratio!r}")

    def can_lend(self, ref_long: int, target_long: int) -> bool:
        return ref_long >= self.ratio * target_long

    def assign(self, long_sides: Mapping[str, int]) -> dict[str, PhotoRole]:
        """Role of every photo (keyed as given) from the album's long sides."""
        if not long_sides:
            return {}
        largest, smallest = max(long_sides.values()), min(long_sides.values())
        roles: dict[str, PhotoRole] = {}
        for key, side in long_sides.items():
            if self.can_lend(largest, side):
                roles[key] = PhotoRole.target
            elif self.can_lend(side, smallest):
                roles[key] = PhotoRole.reference
            else:
                roles[key] = PhotoRole.neither
        return roles

    def describe(self) -> str:
        return f"a reference's long side must be at least {self.ratio:g}x the target's (ref_ratio)"


def no_reference_reason(ratio: float | None, target_long: int, reference_sides: list[int],
                        min_ref_side: int | None = None) -> str:
    """One line: why a target has no reference, and which setting would change that."""
    if ratio is None:
        need = f"no photo of the album is a reference (long side >= {min_ref_side} px)" if min_ref_side else \
            "no photo of the album is a reference"
        return f"{need}; lower --min-ref-side, or drop the thresholds to use the relative --ref-ratio rule"
    largest = max(reference_sides, default=0)
    need = int(-(-ratio * target_long // 1))
    found = f"the largest reference is {largest} px" if largest else "the album has no reference"
    return (f"no photo is at least {ratio:g}x its long side ({target_long} px -> needs >= {need} px; {found}); "
            "a lower --ref-ratio would allow smaller references")
