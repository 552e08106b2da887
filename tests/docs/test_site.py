"""The documentation site builds in strict mode and holds together, in a real browser too.

The site is built once (``mkdocs build --strict``, as ``make docs`` does; about 15 s of CPU). Every page's
links and images are then resolved on disk (each internal link to an existing page and, with a
``#fragment``, to an element of that id), and a few pages are opened in headless Chromium (Debian's
``chromium``, installed with apt-get where missing; skipped with the reason where that is impossible),
served over loopback HTTP: the images load, the internal links answer, the API page of
``visionkit.ops.nms`` is there.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("docs-site")  # one worker builds the site once for all three tests


def _lab_browser_module() -> object:
    """tests/lab/test_lab_book_browser.py: its Chromium flags and ``chromium`` fixture (apt-get install)."""
    spec = importlib.util.spec_from_file_location("_lab_browser", ROOT / "tests/lab/test_lab_book_browser.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_browser = _lab_browser_module()
FLAGS = _browser.FLAGS  # type: ignore[attr-defined]
chromium = _browser.chromium  # type: ignore[attr-defined]  (the session fixture)
PAGES = ("index.html", "getting-started.html", "guides/nms.html", "api/visionkit.ops.nms.html", "cli.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag == "img" and values.get("src"):
            self.images.append(values["src"] or "")


@functools.cache
def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def broken_references(site: Path) -> list[str]:
    """``"page -> target"`` for every internal link or image of the site that does not resolve."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":
            continue  # served for any missing URL, so its links are absolute ("/index.html")
        parsed = _parse(page)
        for target in parsed.links + parsed.images:
            parts = urlsplit(target)
            if parts.scheme or target.startswith("//"):
                continue  # external
            file = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if file.is_dir():
                file = file / "index.html"
            if not file.is_file():
                problems.append(f"{page.relative_to(site)} -> {target}")
            elif (
                parts.fragment and file.suffix == ".html" and unquote(parts.fragment) not in _parse(file).ids
            ):
                problems.append(f"{page.relative_to(site)} -> {target} (no such anchor)")
    return problems


def test_every_internal_link_and_image_resolves(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert len(pages) > 100  # the guides and one API page per module
    assert broken_references(site) == []
    nms_page = _parse(site / "api" / "visionkit.ops.nms.html")
    assert {"visionkit.ops.nms.nms", "visionkit.ops.nms.batched_nms"} <= nms_page.ids
    cli = (site / "cli.html").read_text(encoding="utf-8")
    assert all(f"visionkit {name}" in cli for name in ("train detect", "eval file", "predict", "data info"))
    assert "Recipe keys:" in cli and "ema_decay (float, default 0.0)" in cli  # the --help text, line by line
    handbook = (site / "handbook.html").read_text(encoding="utf-8")
    assert "inception-1x1" in handbook and "visionkit.ops.soft_nms.html" in handbook


def test_the_link_check_finds_a_missing_page_and_image(site: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"  # the NMS guide with what it refers to, less one image and one page
    shutil.copytree(site / "images", copy / "images")
    (copy / "images" / "demo_crowded_soft_gaussian.png").unlink()
    (copy / "guides").mkdir()
    shutil.copyfile(site / "guides" / "nms.html", copy / "guides" / "nms.html")
    problems = broken_references(copy)
    assert any(p.endswith("demo_crowded_soft_gaussian.png") for p in problems), problems
    assert any("visionkit.ops.soft_nms.html" in p for p in problems), problems


CHECK_PAGE = """<!doctype html><html><body><pre id="result">pending</pre><script>
async function check(path) {
  const frame = document.createElement("iframe");
  document.body.appendChild(frame);
  await new Promise(done => { frame.onload = done; frame.src = path; });
  const doc = frame.contentDocument;
  const images = [...doc.images];
  await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const broken = images.filter(i => i.naturalWidth === 0).map(i => i.getAttribute("src"));
  const internal = [...doc.querySelectorAll("a[href]")].map(a => a.href)
    .filter(h => h.startsWith(location.origin)).map(h => h.split("#")[0]);
  const unique = [...new Set(internal)];
  const answers = await Promise.all(unique.map(h => fetch(h).then(r => r.status, () => 0)));
  return {path, title: doc.title, images: images.length, broken,
          links: unique.length, dead: unique.filter((h, k) => answers[k] !== 200),
          nms: doc.getElementById("visionkit.ops.nms.nms") !== null};
}
(async () => {
  const results = [];
  for (const path of PAGES) results.push(await check(path));
  document.getElementById("result").textContent = JSON.stringify(results);
})();
</script></body></html>"""


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    (site / "check.html").write_text(CHECK_PAGE.replace("PAGES", json.dumps(PAGES)), encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_pages_render_in_chromium(chromium: str, served: str, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    command = [
        chromium,
        *FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
        "--dump-dom",
        f"{served}/check.html",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=profile)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found and found.group(1) != "pending", done.stdout[-2000:]
    results = {r["path"]: r for r in json.loads(found.group(1).replace("&amp;", "&"))}
    assert list(results) == list(PAGES)
    for result in results.values():
        assert result["title"] and result["links"] > 5, result
        assert result["broken"] == [] and result["dead"] == [], result
    assert results["guides/nms.html"]["images"] >= 1 and results["index.html"]["images"] >= 1
    assert results["api/visionkit.ops.nms.html"]["nms"]
