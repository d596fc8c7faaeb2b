"""One self-contained HTML page about a trained run: `build_report(run)` writes RUN/report.html."""

from cnnlab.apps.report.builder import build_report, render_report

__all__ = ["build_report", "render_report"]
