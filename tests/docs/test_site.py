"""The documentation site: a smoke-mode build with warnings as errors, checked like a reader would.

One build (``PYRO_GEN_SMOKE=1``: the tutorials execute in smoke mode) serves every test here;
``make test`` runs pytest with ``--dist loadgroup`` so that they share one worker and one build.
The build fails on a broken cross-reference, a public function without a docstring, a notebook
cell that raises, or any other Sphinx warning. This build is also what runs the notebooks in
the test suite: they execute inside it, with their errors failing it.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import inspect
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_data_dir

sys.path.insert(0, str(ROOT / "docs" / "_ext"))
from pyro_gen_sphinx import lookup  # noqa: E402  (the extension's own resolution of a dotted name)

pytestmark = pytest.mark.xdist_group("docs")
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.py") if not p.stem.startswith("_"))


def sphinx_build(src: Path, out: Path, smoke: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run sphinx-build as ``make docs`` does, with warnings as errors, in a fresh environment."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("MPLBACKEND", None)  # the notebooks' kernels draw their figures inline
    if smoke:
        env["PYRO_GEN_SMOKE"] = "1"
    data = shared_data_dir()
    if data is not None:
        env["PYRO_GEN_DATA"] = str(data)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(src), str(out / "html")]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = sphinx_build(ROOT / "docs", out)
    if proc.returncode != 0:
        pytest.fail(f"the docs build failed (exit {proc.returncode}):\n{proc.stderr[-8000:]}", pytrace=False)
    return out / "html"


def test_build_is_clean(site):
    assert (site / "index.html").is_file() and (site / "search.html").is_file()
    assert (site / "_static" / "mathjax" / "tex-svg.js").is_file()  # served locally: the build is offline


def _inventory(site: Path) -> dict[str, dict[str, str]]:
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", posixpath_join)
    data = inv.data if hasattr(inv, "data") else inv
    return {kind: {name: item[2] if isinstance(item, tuple) else item.uri for name, item in entries.items()}
            for kind, entries in data.items()}


def posixpath_join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


def _public_modules() -> list[str]:
    import pyro_gen

    names = ["pyro_gen"] + [m.name for m in pkgutil.walk_packages(pyro_gen.__path__, "pyro_gen.")]
    return [n for n in names if not any(part.startswith("_") for part in n.split("."))]


def test_every_public_name_is_in_the_api_reference(site):
    """Each name in a module's ``__all__`` has an entry: under that name, or under the name of the
    object it re-exports (``pyro_gen.flows.Flow`` is documented as ``pyro_gen.flows.families.Flow``)."""
    inventory = _inventory(site)
    entries = {name for kind, names in inventory.items() if kind.startswith("py:") for name in names}
    documented = {id(lookup(name)) for name in entries}
    missing = []
    for modname in _public_modules() + [f"models.{m}" for m in MODELS]:
        module = importlib.import_module(modname)
        public = getattr(module, "__all__", None)
        if public is None:  # models/: the public names defined in the file
            public = [n for n, o in vars(module).items() if not n.startswith("_")
                      and (inspect.isclass(o) or inspect.isfunction(o)) and o.__module__ == modname]
        for name in public:
            obj = getattr(module, name)
            if f"{modname}.{name}" in entries or (not inspect.ismodule(obj) and id(obj) in documented):
                continue
            if inspect.ismodule(obj) and (obj.__name__ in entries or obj.__name__ in _section_modules(site)):
                continue
            missing.append(f"{modname}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"


@functools.lru_cache
def _section_modules(site: Path) -> frozenset[str]:
    """Modules whose page section lists their members without a module index entry (the objective
    modules that share a name with an objective factory)."""
    html = (site / "api" / "infer.html").read_text()
    return frozenset(m for m in _public_modules() if f"id=\"{m}." in html)


def test_every_module_and_model_has_a_page(site):
    entries = _inventory(site).get("py:module", {})
    missing = [m for m in _public_modules() + ["models"] + [f"models.{m}" for m in MODELS]
               if m not in entries and m not in _section_modules(site)]
    assert not missing, f"modules without a page in docs/api: {missing}"


def test_tutorials_are_rendered_with_their_figures(site):
    not_executed = {"04_topics": "20newsgroups", "05_sequences": "jsb_chorales"}
    data = shared_data_dir()
    for name in NOTEBOOKS:
        page = (site / "tutorials" / f"{name}.html").read_text()
        if name in not_executed and (data is None or not (data / not_executed[name]).is_dir()):
            continue  # shown unexecuted where its data set is absent
        assert "cell_output" in page, f"{name}: no executed output on its page"
        assert "<img" in page, f"{name}: no rendered figure on its page"


def test_the_build_fails_on_what_it_must(tmp_path, monkeypatch):
    """A missing docstring, a broken cross-reference and a notebook that raises each fail a build
    with the project's configuration, and the messages name them."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "docs" / "_ext", src / "_ext")
    conf = (ROOT / "docs" / "conf.py").read_text().replace(
        "ROOT = Path(__file__).resolve().parents[1]", f"ROOT = Path({str(ROOT)!r})")
    (src / "conf.py").write_text(conf + '\npyro_gen_docs_packages = [*pyro_gen_docs_packages, "probe"]\n')
    (tmp_path / "pkgs").mkdir()
    (tmp_path / "pkgs" / "probe.py").write_text(
        '"""A probe module."""\n\n\ndef documented():\n    """Has one."""\n\n\ndef undocumented():\n    pass\n')
    (src / "index.md").write_text("# Probe\n\n```{toctree}\nbroken\n```\n\nSee {py:func}`pyro_gen.no_such_function`.\n\n"
                                  "```{eval-rst}\n.. automodule:: probe\n```\n")
    notebook = {"cells": [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": ["# Broken"]},
                          {"cell_type": "code", "id": "fails", "execution_count": None, "metadata": {}, "outputs": [],
                           "source": ['raise ValueError("the cell that fails")']}],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    (src / "broken.ipynb").write_text(json.dumps(notebook))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "pkgs"), os.environ.get("PYTHONPATH")])))
    proc = sphinx_build(src, tmp_path / "out", timeout=300)
    assert proc.returncode != 0
    assert "missing docstring: function probe.undocumented" in proc.stderr
    assert "probe.documented" not in proc.stderr
    assert "pyro_gen.no_such_function" in proc.stderr
    assert "the cell that fails" in proc.stderr


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_site_in_a_real_browser(site):
    """Headless Chromium opens the index and a tutorial: navigation, a rendered figure, the search
    box and a typeset formula are there, a search finds a page, and the console shows no error."""
    browser_path = _browser()
    if browser_path is None:
        pytest.skip("no Chromium: `make install` installs Debian's chromium when run as root with apt-get")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the docs extra")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    problems: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))

            page.goto(f"{base}/index.html", wait_until="networkidle")
            assert page.locator(".sidebar-tree a").count() >= 5, "no navigation on the index page"
            assert page.locator("input.sidebar-search").count() == 1, "no search box on the index page"
            assert page.locator(".sidebar-tree a", has_text="API reference").count() >= 1

            page.goto(f"{base}/tutorials/01_vae.html", wait_until="networkidle")
            figure = page.locator(".cell_output img").first
            figure.wait_for(state="visible")
            assert page.evaluate("(img) => img.naturalWidth", figure.element_handle()) > 0, "the figure did not load"
            page.wait_for_function("() => document.querySelectorAll('mjx-container svg').length > 0",
                                   timeout=20000)  # MathJax typeset the page's formulas, from the local copy

            page.fill("input.sidebar-search", "log_likelihood")
            page.press("input.sidebar-search", "Enter")
            page.wait_for_selector("#search-results li", timeout=20000)
            assert page.locator("#search-results li").count() >= 1, "the search found nothing"
            browser.close()
    finally:
        server.shutdown()
    assert not problems, "\n".join(problems)
