"""MkDocs hooks of the visionkit site: pages generated from the code, so they cannot go stale.

* ``api/<module>.md`` for every public module of ``src/visionkit`` (a mkdocstrings ``:::`` block each),
  ``api/<package>.md`` for every package (its docstring and the list of its modules), and the
  "API reference" part of the navigation;
* the CLI reference (``<!-- visionkit:cli-reference -->`` in ``cli.md``): every command of the Click group
  ``visionkit.cli.main`` with the exact text its ``--help`` prints (Click's ``\\b`` paragraphs, the recipe
  key lists, kept as they are);
* the handbook map (``<!-- visionkit:handbook-map -->`` in ``handbook.md``): one row per handbook section
  from :data:`visionkit.lab.handbook.TOPICS`, the modules of :data:`SECTION_MODULES` (a module that no
  longer exists fails the build) and the lab experiments registered for that section.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
MAP_MARKER = "<!-- visionkit:handbook-map -->"
CLI_MARKER = "<!-- visionkit:cli-reference -->"

#: handbook section -> the modules that implement it (checked to exist when the site is built).
SECTION_MODULES: dict[str, tuple[str, ...]] = {
    "§1": ("visionkit.engine.diagnostics", "visionkit.engine.regularization"),
    "§2": ("visionkit.engine.diagnostics",),
    "§3": ("visionkit.engine.diagnostics", "visionkit.engine.trainer"),
    "§4": ("visionkit.nn.norm",),
    "§5": ("visionkit.nn.init",),
    "§6": ("visionkit.engine.lr_finder", "visionkit.engine.search"),
    "§7": ("visionkit.data.preprocessing",),
    "§8": ("visionkit.ops.nms", "visionkit.ops.soft_nms"),
    "§9": ("visionkit.models.necks.fpn",),
    "§10": (
        "visionkit.ops.anchors",
        "visionkit.ops.box_coder",
        "visionkit.ops.matcher",
        "visionkit.ops.sampler",
        "visionkit.models.detectors.rpn",
    ),
    "§11": ("visionkit.losses.focal",),
    "§12": ("visionkit.nn.blocks", "visionkit.analysis.summary"),
    "§13": ("visionkit.analysis.summary", "visionkit.analysis.counting"),
    "§14": ("visionkit.models.backbones.vgg",),
    "§15": ("visionkit.nn.blocks",),
    "§16": (
        "visionkit.models.detectors.retinanet",
        "visionkit.models.detectors.faster_rcnn",
        "visionkit.lab.demo",
    ),
    "§17": ("visionkit.models.detectors.retinanet", "visionkit.models.heads.retinanet_head"),
    "§18": ("visionkit.models.detectors.yolo", "visionkit.ops.anchors", "visionkit.models.backbones.darknet"),
    "§19": ("visionkit.nn.blocks",),
    "§20": ("visionkit.ops.pooling",),
    "§21": ("visionkit.nn.residual", "visionkit.models.backbones.resnet"),
    "§22": (
        "visionkit.models.segmentation.fcn",
        "visionkit.models.segmentation.upsample",
        "visionkit.engine.segment",
        "visionkit.metrics.segmentation",
    ),
    "§23": ("visionkit.metrics.classification", "visionkit.metrics.curves"),
    "§24": ("visionkit.ops.roi_pool", "visionkit.ops.roi_align", "visionkit.ops.multiscale_roi_align"),
    "§25": ("visionkit.nn.residual", "visionkit.models.backbones.resnet"),
    "§26": ("visionkit.engine.optim",),
    "§27": (
        "visionkit.compress.prune",
        "visionkit.compress.structured",
        "visionkit.compress.share",
        "visionkit.compress.lowrank",
        "visionkit.compress.distill",
        "visionkit.compress.detect",
        "visionkit.losses.distill",
    ),
    "§28": ("visionkit.models.backbones.mobilenet",),
    "§29": ("visionkit.engine.schedules",),
    "§30": ("visionkit.data.samplers", "visionkit.losses.weighted", "visionkit.losses.focal"),
    "§31": ("visionkit.nn.blocks",),
    "§33": (
        "visionkit.metrics.detection.voc",
        "visionkit.metrics.detection.coco",
        "visionkit.metrics.multilabel",
    ),
    "§36": ("visionkit.nn.blocks", "visionkit.models.backbones.googlenet"),
    "frontier": ("visionkit.models.detectors.cascade_rcnn", "visionkit.models.detectors.refinedet"),
    "§37": (
        "visionkit.deploy.fuse",
        "visionkit.deploy.onnx",
        "visionkit.deploy.onnx_nms",
        "visionkit.deploy.quantize",
        "visionkit.deploy.qat",
    ),
}


def public_modules() -> list[str]:
    """Dotted names of every public module and package under ``src/visionkit`` (sorted)."""
    names = []
    for path in sorted((SOURCE / "visionkit").rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return sorted(names)


def _is_package(name: str) -> bool:
    return (SOURCE / Path(*name.split(".")) / "__init__.py").is_file()


def _page(name: str) -> str:
    return f"api/{name}.md"


def _children(name: str, modules: list[str]) -> list[str]:
    return [m for m in modules if m.rsplit(".", 1)[0] == name]


def _api_markdown(name: str, modules: list[str]) -> str:
    if not _is_package(name):
        return f"# `{name}`\n\n::: {name}\n    options:\n      show_root_heading: false\n"
    lines = [f"# `{name}`", "", f"::: {name}", "    options:", "      show_root_heading: false"]
    if name == "visionkit":
        lines += ["      members: false"]
    children = _children(name, modules)
    if children:
        lines += ["", "## Modules", ""]
        lines += [f"- [`{child}`]({child}.md)" for child in children]
    return "\n".join(lines) + "\n"


def _api_index(modules: list[str]) -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings (Google style: arguments, tensor shapes, the paper, a `>>>` example",
        "that the tests run). One page per module; a package's page shows its docstring and lists its",
        "modules. Imports point one way: `ops` → `nn`/`losses`/`data` → `models` → `metrics`/`analysis`/",
        "`viz` → `engine` → `compress` → `deploy` → `lab` → `cli`.",
        "",
    ]
    for name in modules:
        depth = name.count(".") - 1
        if depth >= 0:
            lines.append("    " * depth + f"- [`{name}`]({name}.md)")
    return "\n".join(lines) + "\n"


def on_config(config: Any) -> Any:
    modules = public_modules()
    tops = [m for m in modules if m.count(".") == 1]
    api: list[Any] = [{"Overview": "api/index.md"}, {"visionkit": _page("visionkit")}]
    for top in tops:
        inside = [m for m in modules if m == top or m.startswith(top + ".")]
        if len(inside) == 1:
            api.append({top.split(".", 1)[1]: _page(top)})
        else:
            api.append({top.split(".", 1)[1]: [{m: _page(m)} for m in inside]})
    for entry in config["nav"]:
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = api
    return config


def on_files(files: Files, config: Any) -> Files:
    modules = public_modules()
    files.append(File.generated(config, "api/index.md", content=_api_index(modules)))
    for name in modules:
        files.append(File.generated(config, _page(name), content=_api_markdown(name, modules)))
    return files


def handbook_map() -> str:
    """The markdown table of the handbook map (imports visionkit's lab registry from ``src``)."""
    if str(SOURCE) not in sys.path:
        sys.path.insert(0, str(SOURCE))
    from visionkit.lab.handbook import TOPICS
    from visionkit.lab.registry import experiments, load_experiments

    load_experiments()
    modules = set(public_modules())
    rows = ["| § | topic | API | lab experiments |", "|---|---|---|---|"]
    for section, chinese, english in TOPICS:
        if section not in SECTION_MODULES:
            raise KeyError(f"docs/hooks.py: SECTION_MODULES has no entry for {section}")
        api = []
        for name in SECTION_MODULES[section]:
            if name not in modules:
                raise KeyError(f"docs/hooks.py: {section} names {name}, which is not a module of visionkit")
            api.append(f"[`{name.removeprefix('visionkit.')}`](api/{name}.md)")
        found = [e for e in experiments() if section in e.sections]
        lab = [f"`{e.name}`" + (" (errata)" if e.errata else "") for e in found]
        rows.append(
            f"| {section} | {english} ({chinese}) | {', '.join(api) or '—'} | {', '.join(lab) or '—'} |"
        )
    return "\n".join(rows)


_WIDTH: dict[str, Any] = {"terminal_width": 100, "max_content_width": 100}


def _commands(command: Any, context: Any) -> Iterator[tuple[str, Any, Any]]:
    """``(full name, command, context)`` of ``command`` and of every subcommand below it, depth first."""
    import click

    yield context.command_path, command, context
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            child = sub.make_context(name, [], parent=context, resilient_parsing=True, **_WIDTH)
            yield from _commands(sub, child)


def cli_reference() -> str:
    """Markdown: a table of every command and, per command, the text its ``--help`` prints."""
    if str(SOURCE) not in sys.path:
        sys.path.insert(0, str(SOURCE))
    from visionkit.cli import main

    root = main.make_context("visionkit", [], resilient_parsing=True, **_WIDTH)
    found = list(_commands(main, root))
    rows = ["| command | what it does |", "|---|---|"]
    sections = []
    for path, command, context in found:
        anchor = path.replace(" ", "-")
        rows.append(f"| [`{path}`](#{anchor}) | {command.get_short_help_str(limit=90)} |")
        sections += [f"## `{path}` {{#{anchor}}}", "", "```text", command.get_help(context), "```", ""]
    return "\n".join([*rows, "", *sections])


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if MAP_MARKER in markdown:
        markdown = markdown.replace(MAP_MARKER, handbook_map())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown
