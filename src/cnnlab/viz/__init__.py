"""Plots for CNNs, all in one style, built without pyplot so they work headless and in threads."""

from cnnlab.viz.filters import plot_feature_maps, plot_filters
from cnnlab.viz.images import overlay_heatmap, show_images, to_hwc
from cnnlab.viz.predictions import plot_explanation, plot_mistakes, plot_predictions
from cnnlab.viz.style import figure_png, new_figure, plot_style, save_figure
from cnnlab.viz.training import plot_confusion, plot_curves, plot_runs

__all__ = [
    "figure_png",
    "new_figure",
    "overlay_heatmap",
    "plot_confusion",
    "plot_curves",
    "plot_explanation",
    "plot_feature_maps",
    "plot_filters",
    "plot_mistakes",
    "plot_predictions",
    "plot_runs",
    "plot_style",
    "save_figure",
    "show_images",
    "to_hwc",
]
