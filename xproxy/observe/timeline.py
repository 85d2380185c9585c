"""The waits of a program's start as a picture (`xproxy trace --timeline out.png`): one row per
round trip the program waited for (observe/waits.py), in the order they began, with the
client and sequence number, the request's name, the time waited and who answered it, and a
bar on a shared time axis; a vertical line marks the first window mapped. Drawn with Pillow.

Layout, in pixels: a header of `HEADER` rows, then `ROW` per wait, then a footer of
`FOOTER`; `rows_drawn` says how many waits got a row (at most `MAX_ROWS`: the rest are
counted in the footer), so a picture's height is `height(n)`.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from .waits import Answered, WaitAnalysis

__all__ = ["BAR_COLOURS", "FOOTER", "HEADER", "MAX_ROWS", "ROW", "WIDTH", "bar_left", "draw",
           "height", "rows_drawn"]

WIDTH = 1400
ROW = 16
HEADER = 3 * ROW
FOOTER = 2 * ROW
#: More rows than this would make a picture no viewer opens; the footer counts the rest.
MAX_ROWS = 20_000
#: Where the time axis starts (the columns of text are to its left).
_COLUMNS = (("#", 8), ("client:seq", 60), ("request", 150), ("waited", 430),
            ("answered by", 500))
_AXIS_LEFT = 630
_AXIS_RIGHT = WIDTH - 20

BAR_COLOURS = {
    Answered.SERVER: (214, 39, 40),  # crossed the link: red
    Answered.LINK: (44, 160, 44),  # the link agent: green
    Answered.NO_LINK: (31, 119, 180),  # a local server: blue
    Answered.UNKNOWN: (127, 127, 127),
}
_ANSWERED_TEXT = {
    Answered.SERVER: "server, over the link",
    Answered.LINK: "the link agent",
    Answered.NO_LINK: "server (no link)",
    Answered.UNKNOWN: "? (link too fast)",
}
_MAP_COLOUR = (148, 103, 189)
_TEXT = (20, 20, 20)
_STRIPE = (244, 244, 244)


def rows_drawn(n: int) -> int:
    return min(n, MAX_ROWS)


def height(n: int) -> int:
    """The picture's height for `n` waits."""
    return HEADER + ROW * rows_drawn(n) + FOOTER


def bar_left() -> int:
    """The x where the time axis begins (every bar starts at or right of it)."""
    return _AXIS_LEFT


def draw(analysis: WaitAnalysis, path: str, title: str = "") -> int:
    """Draw the analysis to a PNG at `path`; returns the number of rows drawn."""
    waits = sorted(analysis.waits, key=lambda w: (w.start, w.client, w.seq))
    n = rows_drawn(len(waits))
    img = Image.new("RGB", (WIDTH, height(len(waits))), "white")
    g = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    t0 = analysis.start if analysis.start is not None else (waits[0].start if waits else 0.0)
    end = max([analysis.end or t0] + [w.start + w.waited for w in waits])
    span = max(end - t0, 1e-6)
    scale = (_AXIS_RIGHT - _AXIS_LEFT) / span

    def x_of(t: float) -> int:
        return _AXIS_LEFT + round((t - t0) * scale)

    s = analysis.summary()
    mapped = ("no window mapped" if s["first_map"] is None
              else f"first window mapped at {s['first_map']:.3f} s")
    g.text((8, 4), f"{title}  {len(waits)} round trips waited, {s['waited']:.3f} s in all; "
           f"{s['before_map']} before the first map ({s['waited_before_map']:.3f} s); {mapped}",
           fill=_TEXT, font=font)
    for label, x in _COLUMNS:
        g.text((x, ROW + 4), label, fill=_TEXT, font=font)
    g.text((_AXIS_LEFT, ROW + 4), "0 s", fill=_TEXT, font=font)
    g.text((_AXIS_RIGHT - 60, ROW + 4), f"{span:.3f} s", fill=_TEXT, font=font)
    g.line([(0, HEADER - 1), (WIDTH, HEADER - 1)], fill=_TEXT)
    for i, w in enumerate(waits[:n]):
        top = HEADER + i * ROW
        if i % 2:
            g.rectangle([(0, top), (WIDTH - 1, top + ROW - 1)], fill=_STRIPE)
        name = w.name if len(w.name) <= 44 else w.name[:43] + "…"
        cells = (str(i + 1), f"{w.client}:{w.seq}", name + (" (error)" if w.error else ""),
                 f"{w.waited * 1000:.1f} ms", _ANSWERED_TEXT[w.answered])
        for (_, x), text in zip(_COLUMNS, cells):
            g.text((x, top + 2), text, fill=_TEXT, font=font)
        left = x_of(w.start)
        right = max(left + 2, x_of(w.start + w.waited))
        g.rectangle([(left, top + 3), (min(right, WIDTH - 1), top + ROW - 4)],
                    fill=BAR_COLOURS[w.answered])
    if analysis.first_map is not None:
        x = x_of(analysis.first_map)
        g.line([(x, HEADER), (x, HEADER + n * ROW)], fill=_MAP_COLOUR, width=2)
    foot = HEADER + n * ROW + 4
    more = len(waits) - n + analysis.dropped
    g.text((8, foot), ("" if not more else f"{more} more round trips not drawn; ")
           + "bars: red = over the link, green = answered by the link, blue = local server; "
           "violet line = first window mapped", fill=_TEXT, font=font)
    img.save(path, "PNG")
    return n
