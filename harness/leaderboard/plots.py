"""Figure plumbing shared by the tasks' leaderboard plots: a headless pyplot and a PNG saver.

Each task draws its own plots (the ``plots`` function of its report module); this module
only makes sure they are drawn without a display and saved the same way. A section's text links
a plot only when the plot is drawn (a plot function returns None when it has nothing to draw):
``harness leaderboard --check`` fails on an image link to a missing file and on a PNG that no
section draws, and ``harness leaderboard`` removes such orphans.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

if TYPE_CHECKING:
    from harness.leaderboard.report import Section


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out_path: Path, dpi: int = 100) -> Path:
    """Lay out, save as PNG and close ``fig``; returns ``out_path``."""
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    pyplot().close(fig)
    return out_path


def write_plots(section: "Section", out_dir: Path,
                plots: Sequence[tuple[Callable[["Section", Path], Optional[Path]], str]]) -> list[Path]:
    """Draw each ``(plot, suffix)`` of a section into ``<out_dir>/<slug>_<suffix>.png``; a plot
    returns None when the section has nothing for it. Returns the written paths."""
    written = []
    for plot, suffix in plots:
        png = plot(section, Path(out_dir) / f"{section.slug}_{suffix}.png")
        if png is not None:
            written.append(png)
    return written
