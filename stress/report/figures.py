"""Matplotlib for the reports' pictures, set up once: the file-only Agg backend (no screen here)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib  # lazy: matplotlib costs about a second to import, which only a run that draws should pay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
