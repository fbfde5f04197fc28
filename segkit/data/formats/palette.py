"""The colour map of PASCAL VOC's palette PNGs, shared by the VOC reader
(:mod:`segkit.data.formats.voc`) and the synthetic VOC writer (:mod:`segkit.data.formats.synth`),
which import it from here rather than from each other."""

from __future__ import annotations


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The colours of VOC's palette PNGs: label ``i`` spreads its bits over R, G and B."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors
