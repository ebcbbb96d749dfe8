"""Helpers that turn matplotlib figures into PNG bytes for the report."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

DPI = 110


def new_figure(width_in: float = 6.4, height_in: float = 3.2) -> tuple[Figure, plt.Axes]:
    """Create a figure with one axes, detached from pyplot's global state."""
    figure = Figure(figsize=(width_in, height_in), layout="constrained")
    return figure, figure.add_subplot()


def to_png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
