"""The documentation's code runs as written: every python block of the README and of the site's
pages (docs/*.md, docs/guide/*.md), each section's blocks in a namespace of their own.

Blocks that train for minutes (the pages show real settings) run with fit capped at a few
steps and IWAE-k evaluation at k=5 on 100 points; what is checked is that every name, call
and argument in them works. Blocks on real data skip when the data set is absent."""

import re

import pytest
import torch

from tests.conftest import ROOT, shared_data_dir

PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guide").glob("*.md"))]

# "page :: heading" of every section with python blocks -> (capped, needs real data)
SECTIONS = {
    "README.md :: ## Use it": (True, True),
    "docs/getting-started.md :: ## A first model/guide pair": (False, False),
    "docs/getting-started.md :: ## Packaged models": (True, True),
    "docs/guide/models.md :: ## Using pyro_gen with your Pyro code": (False, False),
    "docs/guide/models.md :: ## Global latents under minibatches": (False, False),
    "docs/guide/evaluation.md :: # Evaluation": (False, False),
    "docs/guide/evaluation.md :: ## Tighter bounds: AIS and BDMC": (False, False),
    "docs/guide/energy.md :: # Energy-based models: the RBM": (True, False),
    "docs/guide/discrete.md :: ## Partly labeled data": (True, False),
    "docs/guide/representations.md :: ## Metrics": (False, False),
    "docs/guide/scale.md :: ## Training on your own data": (True, True),
    "docs/guide/flows.md :: # Flows": (True, False),
    "docs/guide/prescribed.md :: ## Sequences: HMMs and deep Markov models": (True, True),
}


def _sections(page: str) -> dict[str, list[str]]:
    """The python blocks of a page, by the heading (# or ##) they stand under."""
    text = (ROOT / page).read_text()
    out: dict[str, list[str]] = {}
    # headings outside code blocks only: a "# comment" line inside a block is not one
    parts = re.split(r"(```.*?```)", text, flags=re.S)
    heading = None
    for part in parts:
        if part.startswith("```"):
            if part.startswith("```python\n") and heading is not None:
                out.setdefault(heading, []).append(part[len("```python\n"):-3])
            continue
        for line in part.splitlines():
            if re.match(r"^##? \S", line):
                heading = line.strip()
    return out


def test_every_python_block_is_covered():
    found = {f"{page} :: {heading}" for page in PAGES for heading in _sections(page)}
    assert sorted(found) == sorted(SECTIONS)


@pytest.mark.parametrize("key", list(SECTIONS))
def test_section_runs_as_written(key, monkeypatch, one_thread, tmp_path):
    capped, needs_data = SECTIONS[key]
    if needs_data:
        root = shared_data_dir()
        if root is None:
            pytest.skip("real data sets not found: set PYRO_GEN_DATA or put ../shared/data beside the repository")
        monkeypatch.setenv("PYRO_GEN_DATA", str(root))
    if capped:
        import pyro_gen.evaluate as evaluate
        import pyro_gen.flows.density as density
        import pyro_gen.infer.train as train

        real_fit, real_ll, real_fit_data = train.fit, evaluate.log_likelihood, density.fit_data
        monkeypatch.setattr(train, "fit", lambda *a, **kw: real_fit(*a, **{**kw, "max_steps": 3, "progress": False}))
        monkeypatch.setattr(evaluate, "log_likelihood", lambda m, g, d, k=1000, **kw: real_ll(
            m, g, d[:100] if torch.is_tensor(d) else d, k=min(k, 5), **kw))
        monkeypatch.setattr(density, "fit_data", lambda f, x, steps=2000, **kw: real_fit_data(f, x, steps=5, **kw))
    monkeypatch.chdir(tmp_path)  # what a block writes (runs/...) stays out of the repository
    monkeypatch.syspath_prepend(str(ROOT))
    page, heading = key.split(" :: ")
    blocks = _sections(page).get(heading)
    assert blocks, f"no python block under {heading!r} in {page}"
    for code in blocks:
        exec(compile(code, f"{page} {heading}", "exec"), {"__name__": "docs"})
