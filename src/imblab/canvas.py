"""Text that stays on the canvas: which text artists a figure draws, which of them leave it, and
growing a figure until none does.

Every figure imblab writes (TensorBoard images, ``imblab-eval``'s and ``imblab-compare``'s PNG
files) is drawn at its own size, without ``bbox_inches="tight"`` (TensorBoard's
``add_figure`` has none), so text that a layout cannot place inside the figure is cut at its
edge. :func:`fit_text` grows such a figure to hold its text; :func:`texts_outside` is the check
(a test's, or a figure function's). Light: matplotlib only.
"""

from __future__ import annotations

from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

__all__ = ["drawn_texts", "fit_text", "renderer_of", "texts_outside"]

TOLERANCE_PX = 0.5  # a glyph's anti-aliased edge may touch the border
MAX_ROUNDS = 4  # a layout that needs more than this to settle will not settle
MAX_INCHES = 60.0  # never grow a figure past this (6000 px at 100 dpi)


def renderer_of(fig: Figure) -> RendererAgg:
    """An Agg renderer of ``fig`` at its size and dpi (the canvas TensorBoard and ``savefig``
    draw PNG files with; a figure made with :class:`Figure` has no drawing canvas until then)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    return canvas.get_renderer()


def drawn_texts(fig: Figure) -> list[tuple[Text, Bbox]]:
    """Every text artist that drawing ``fig`` draws (visible, non-empty: tick labels of ticks
    out of view, empty offset texts and the like are not drawn), with its window extent in
    pixels, from one pass of ``fig.draw`` with its layout engine that rasterizes nothing."""
    renderer = renderer_of(fig)
    drawn: dict[int, Text] = {}

    def record(*args: object, mtext: Text | None = None, **kwargs: object) -> None:
        if mtext is not None:
            drawn[id(mtext)] = mtext

    def skip(*args: object, **kwargs: object) -> None:
        return None

    # as Figure.draw_without_rendering does, with the text calls recorded
    disabled = [m for m in dir(RendererBase) if m.startswith("draw_")]
    disabled += ["open_group", "close_group"]
    own = {name: vars(renderer)[name] for name in disabled if name in vars(renderer)}
    for name in disabled:
        setattr(renderer, name, record if name == "draw_text" else skip)
    try:
        fig.draw(renderer)
    finally:
        for name in disabled:
            delattr(renderer, name)
        for name, method in own.items():  # Agg binds some methods per instance
            setattr(renderer, name, method)
    return [(text, text.get_window_extent(renderer)) for text in drawn.values()]


def texts_outside(fig: Figure) -> list[str]:
    """The drawn texts of ``fig`` whose window extent leaves the canvas, as
    ``'<text>' at x0..x1, y0..y1 px of W x H`` (empty when every text is inside)."""
    width, height = fig.bbox.width, fig.bbox.height
    out = []
    for text, box in drawn_texts(fig):
        if (
            box.x0 < -TOLERANCE_PX
            or box.y0 < -TOLERANCE_PX
            or box.x1 > width + TOLERANCE_PX
            or box.y1 > height + TOLERANCE_PX
        ):
            out.append(
                f"{text.get_text()!r} at {box.x0:.0f}..{box.x1:.0f}, {box.y0:.0f}..{box.y1:.0f}"
                f" px of {width:.0f} x {height:.0f}"
            )
    return out


def _overflow(fig: Figure) -> tuple[float, float, float, float]:
    """How far (inches) the drawn texts reach past the left, bottom, right and top edges."""
    boxes = [box for _, box in drawn_texts(fig)]
    if not boxes:
        return 0.0, 0.0, 0.0, 0.0
    union = Bbox.union(boxes)
    dpi = fig.dpi
    return (
        max(0.0, -union.x0) / dpi,
        max(0.0, -union.y0) / dpi,
        max(0.0, union.x1 - fig.bbox.width) / dpi,
        max(0.0, union.y1 - fig.bbox.height) / dpi,
    )


def fit_text(fig: Figure, pad: float = 0.05) -> Figure:
    """Grow ``fig`` until every text it draws is on the canvas (``pad`` inches to spare at an
    edge it grew across); a figure whose text fits is left as it is. The growth goes to the
    layout engine (constrained or tight layout re-places legends and labels); a figure without
    one keeps its artists where their transforms put them: anchor such text to a figure edge.
    Returns ``fig``."""
    for _ in range(MAX_ROUNDS):
        left, bottom, right, top = _overflow(fig)
        if max(left, bottom, right, top) * fig.dpi <= TOLERANCE_PX:
            break
        width, height = fig.get_size_inches()
        grow_x = left + right + (pad if left + right else 0.0)
        grow_y = bottom + top + (pad if bottom + top else 0.0)
        fig.set_size_inches(min(width + grow_x, MAX_INCHES), min(height + grow_y, MAX_INCHES))
    return fig
