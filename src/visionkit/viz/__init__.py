"""Visualisation: detections drawn on images, image grids, PR and training curves, HTML metrics tables."""

from visionkit.viz.boxes import PALETTE, class_colour, draw_boxes, image_grid, to_pil
from visionkit.viz.plots import metrics_table_html, plot_pr_curves, plot_training_curves, read_training_log

__all__ = [
    "PALETTE",
    "class_colour",
    "draw_boxes",
    "image_grid",
    "metrics_table_html",
    "plot_pr_curves",
    "plot_training_curves",
    "read_training_log",
    "to_pil",
]
