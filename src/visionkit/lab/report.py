"""The main job's HTML report: a jinja2 template (shipped as package data) filled from ``metrics.json``.

:func:`report_context` turns the demo's metrics (see :mod:`visionkit.lab.demo`) into the template's
tables and figure lists; :func:`render_report` writes the page after checking that every image it refers to
exists beside it, so the report always opens complete in a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from visionkit.viz import metrics_table_html

__all__ = ["referenced_images", "render_report", "report_context"]

TEMPLATE = "report.html.j2"


class _ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources += [value or "" for name, value in attrs if name == "src"]


def referenced_images(page: str) -> list[str]:
    """The ``src`` of every ``<img>`` in an HTML page, in order.

    Example:
        >>> referenced_images('<p><img src="a.png" alt=""><img src="b/c.png"></p>')
        ['a.png', 'b/c.png']
    """
    parser = _ImageSources()
    parser.feed(page)
    parser.close()
    return parser.sources


def render_report(context: Mapping[str, Any], path: str | Path) -> Path:
    """Render the report template with ``context`` to ``path`` (an ``.html`` file).

    Args:
        context: ``title``, ``subtitle``, ``verdicts`` (rows of claim/measured/target/passed), ``tables``
            (HTML strings: accuracy, per_class list, speed, anchors, nms, settings), ``figures`` (lists of
            ``{src, caption}`` for training, pr, predictions, nms; ``src`` relative to the page) and
            ``notes`` (speed, anchors, nms) — what :func:`report_context` returns.
        path: the page to write; its folder must already hold every referenced image.

    Returns:
        ``path``.

    Raises:
        ValueError: an image the page refers to is missing (all missing files are named), or the page
            refers to an absolute or remote address.
    """
    path = Path(path)
    template_text = resources.files("visionkit.lab").joinpath("templates", TEMPLATE).read_text("utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
    page = environment.from_string(template_text).render(**context)
    sources = referenced_images(page)
    remote = [src for src in sources if "://" in src or src.startswith("/")]
    if remote:
        raise ValueError(f"report images must be relative paths beside the page, got {remote}")
    missing = [src for src in sources if not (path.parent / src).is_file()]
    if missing:
        raise ValueError(f"report {path} refers to missing images: {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _ratio(foreground: float, background: float) -> str:
    return f"1 : {background / foreground:,.0f}" if foreground > 0 else "no foreground"


def _accuracy_rows(models: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"model": m["title"], "COCO AP": m["coco"]["AP"], "AP50": m["coco"]["AP50"],
         "AP75": m["coco"]["AP75"], "VOC07 mAP (11-pt)": m["voc07"], "VOC12 mAP (all-pt)": m["voc12"]}
        for m in models.values()
    ]  # fmt: skip


def _figures(items: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"src": item["src"], "caption": item["caption"]} for item in items]


def report_context(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The template context from the demo's ``metrics.json`` (see :func:`visionkit.lab.demo.run_demo`)."""
    models = metrics["models"]
    per_class = [
        metrics_table_html(model["per_class"], caption=f"{model['title']}: per class")
        for model in models.values()
    ]
    speed_rows = [
        {"model": m["title"], "parameters": f"{m['parameters']:,}", "ms / image": m["ms_per_image"],
         "images / s": 1000.0 / m["ms_per_image"], "COCO AP": m["coco"]["AP"], "AP50": m["coco"]["AP50"],
         "train s": m["train_seconds"]}
        for m in models.values()
    ]  # fmt: skip
    anchor_rows = [
        {**row, "foreground : background": _ratio(row["foreground"], row["background"])}
        for row in metrics["anchors"]
    ]
    settings_rows = [{"setting": key, "value": str(value)} for key, value in metrics["settings"].items()]
    figures = metrics["figures"]
    return {
        "title": "visionkit demo: one-stage vs two-stage detection on shapes",
        "subtitle": metrics["subtitle"],
        "verdicts": metrics["verdicts"],
        "tables": {
            "accuracy": metrics_table_html(_accuracy_rows(models)),
            "per_class": per_class,
            "speed": metrics_table_html(speed_rows, digits=2),
            "anchors": metrics_table_html(anchor_rows, digits=1),
            "nms": metrics_table_html(metrics["nms"]),
            "settings": metrics_table_html(settings_rows),
        },
        "figures": {
            name: _figures(figures.get(name, [])) for name in ("training", "pr", "predictions", "nms")
        },
        "notes": metrics["notes"],
    }
