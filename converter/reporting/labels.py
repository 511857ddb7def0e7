"""Point labels that do not overlap: each label takes the first of a ring of offsets around its point whose box
touches no other label and no marker; points closer than a few pixels share one label ('4, 7')."""
from __future__ import annotations

from typing import Any, Sequence

# offsets in points (1/72 inch) around the marker, nearest first; the second ring gets a leader line
OFFSETS = [(6, 5), (6, -11), (-6, 5), (-6, -11), (9, -3), (-9, -3), (0, 9), (0, -15),
           (16, 12), (16, -18), (-16, 12), (-16, -18), (24, -3), (-24, -3), (0, 22), (0, -28)]
MERGE_PIXELS = 6.0
MARKER_PIXELS = 5.0


def group_close(axes: Any, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str]) -> list[tuple[float, float, str, list[int]]]:
    """(x, y, 'a, b', member indices) with points closer than MERGE_PIXELS on screen merged, in input order."""
    screen = axes.transData.transform(list(zip(xs, ys)))
    groups: list[list[int]] = []
    for i, (sx, sy) in enumerate(screen):
        for group in groups:
            gx, gy = screen[group[0]]
            if abs(gx - sx) <= MERGE_PIXELS and abs(gy - sy) <= MERGE_PIXELS:
                group.append(i)
                break
        else:
            groups.append([i])
    return [(xs[g[0]], ys[g[0]], ", ".join(dict.fromkeys(texts[i] for i in g)), g) for g in groups]


def _overlap(box: Any, others: list[Any]) -> float:
    total = 0.0
    for other in others:
        w = min(box.x1, other.x1) - max(box.x0, other.x0)
        h = min(box.y1, other.y1) - max(box.y0, other.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def place_labels(axes: Any, labels: list[tuple[float, float, str]], colours: Sequence[str] = (), fontsize: float = 8,
                 obstacles: Sequence[Any] = ()) -> None:
    """Annotate every (x, y, text) at the free offset nearest its point, avoiding markers, earlier labels and
    `obstacles` (display-space boxes, e.g. other text)."""
    from matplotlib.transforms import Bbox

    figure = axes.figure
    renderer = figure.canvas.get_renderer()
    screen = axes.transData.transform([(x, y) for x, y, _ in labels]) if labels else []
    markers = [Bbox.from_extents(sx - MARKER_PIXELS, sy - MARKER_PIXELS, sx + MARKER_PIXELS, sy + MARKER_PIXELS)
               for sx, sy in screen]
    frame = axes.get_window_extent(renderer)
    placed: list[Any] = list(obstacles)
    for index, (x, y, text) in enumerate(labels):
        colour = colours[index] if index < len(colours) else "#222"
        best = None
        for ring, (dx, dy) in enumerate(OFFSETS):
            note = axes.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                                 color=colour, ha="left" if dx >= 0 else "right", zorder=6,
                                 arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6} if ring >= 8 else None)
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            cost = _overlap(box, placed + markers) + (0 if inside else 1e6)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost == 0:
                break
        placed.append(best[2])
