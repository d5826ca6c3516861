"""The per-object quality flags: one integer bitmask, defined here and nowhere else.

A catalogue row with ``flags == 0`` is clean. Test a bit with ``row.flags & Flag.EDGE``.
"""

from __future__ import annotations

import enum


class Flag(enum.IntFlag):
    """Bits of the ``flags`` column of candidate catalogues and the cutout store."""

    EDGE = 1
    BAD_PIXELS = 2
    CROWDED = 4


DESCRIPTIONS: dict[Flag, str] = {
    Flag.EDGE: "the stamp reaches past the tile border; missing pixels were padded with 0",
    Flag.BAD_PIXELS: "some stamp pixels were NaN, infinite or masked in the image; they were set to 0",
    Flag.CROWDED: "another catalogue object lies within a quarter of the stamp width",
}


def describe(flags: int) -> str:
    """Names of the bits set in ``flags``, joined by ``|`` (``"clean"`` for 0)."""
    names = [flag.name for flag in Flag if flags & flag]
    return "|".join(names) if names else "clean"


def documentation() -> str:
    """One clause per bit, for catalogue metadata and ``--help``."""
    return "; ".join(f"{int(flag)}={flag.name}: {DESCRIPTIONS[flag]}" for flag in Flag)
