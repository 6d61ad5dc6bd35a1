"""A braille-dot canvas: 2x4 dots per terminal cell, one colour per cell, rendered to Rich Text."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

# dot (dx, dy) inside a cell -> bit of the braille code point (U+2800 + bits)
_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class Canvas:
    """``width`` x ``height`` cells; dot coordinates run 0..2w-1, 0..4h-1 with y down."""

    def __init__(self, width: int, height: int) -> None:
        self.width = max(width, 1)
        self.height = max(height, 1)
        self.bits = [[0] * self.width for _ in range(self.height)]
        self.color: list[list[str | None]] = [[None] * self.width for _ in range(self.height)]
        self.prio = [[-1] * self.width for _ in range(self.height)]
        self.chars: list[list[tuple[str, str] | None]] = [
            [None] * self.width for _ in range(self.height)
        ]

    @property
    def dots_x(self) -> int:
        return self.width * 2

    @property
    def dots_y(self) -> int:
        return self.height * 4

    def dot(self, x: int, y: int, color: str, prio: int = 0) -> None:
        if not (0 <= x < self.dots_x and 0 <= y < self.dots_y):
            return
        cx, cy = x >> 1, y >> 2
        self.bits[cy][cx] |= _BITS[x & 1][y & 3]
        if prio >= self.prio[cy][cx]:
            self.prio[cy][cx] = prio
            self.color[cy][cx] = color

    def line(
        self, x0: int, y0: int, x1: int, y1: int, color: str, prio: int = 0, dash: int = 0
    ) -> None:
        """Bresenham line; ``dash`` > 0 draws ``dash`` dots on, ``dash`` off."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        n = 0
        while True:
            if not dash or (n // dash) % 2 == 0:
                self.dot(x0, y0, color, prio)
            n += 1
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def polyline(
        self,
        pts: list[tuple[int, int]],
        color: str,
        prio: int = 0,
        dash: int = 0,
        step: bool = False,
    ) -> None:
        """Connect points; ``step`` holds each value until the next x (a step function)."""
        if len(pts) == 1:
            self.dot(*pts[0], color, prio)
        for (xa, ya), (xb, yb) in zip(pts, pts[1:], strict=False):
            if step:
                self.line(xa, ya, xb, ya, color, prio, dash)
                self.line(xb, ya, xb, yb, color, prio, dash)
            else:
                self.line(xa, ya, xb, yb, color, prio, dash)

    def mark_column(self, cx: int, char: str, color: str) -> None:
        """A vertical marker through empty cells of column ``cx`` (drawn under the data)."""
        if 0 <= cx < self.width:
            for cy in range(self.height):
                if self.chars[cy][cx] is None:
                    self.chars[cy][cx] = (char, color)

    def put(self, cx: int, cy: int, char: str, color: str) -> None:
        """A text character in a cell; data dots in that cell win."""
        if 0 <= cx < self.width and 0 <= cy < self.height:
            self.chars[cy][cx] = (char, color)

    def row_text(self, cy: int) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        bits, colors, chars = self.bits[cy], self.color[cy], self.chars[cy]
        run_style: str | None = None
        run: list[str] = []
        for cx in range(self.width):
            if bits[cx]:
                ch, st = chr(0x2800 + bits[cx]), colors[cx] or ""
            elif chars[cx] is not None:
                ch, st = chars[cx]
            else:
                ch, st = " ", ""
            if st != run_style and run:
                text.append("".join(run), Style.parse(run_style) if run_style else None)
                run = []
            run_style = st
            run.append(ch)
        if run:
            text.append("".join(run), Style.parse(run_style) if run_style else None)
        return text
