"""README snippets run as written: every python block, each in a namespace of its own.

Blocks that train for minutes (the README shows real settings) run with fit capped at a few
steps and IWAE-k evaluation at k=5 on 100 points; what is checked is that every name, call
and argument in them works. Blocks on real data skip when the data set is absent."""

import re

import pytest
import torch

from tests.conftest import ROOT, shared_data_dir

# heading -> (capped, needs real data)
SECTIONS = {
    "## Use it": (True, True),
    "## Using pyro_gen with your Pyro code": (False, False),
    "## Training on your own data": (True, True),
    "## Flows": (True, False),
    "## Sequences: HMMs and deep Markov models": (True, True),
}


def _blocks(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_every_python_block_is_covered():
    text = (ROOT / "README.md").read_text()
    headings = [h for h in re.findall(r"^## .*$", text, re.M)
                if re.search(r"```python", text.split(h + "\n", 1)[1].split("\n## ", 1)[0])]
    assert sorted(headings) == sorted(SECTIONS)


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_readme_section_runs_as_written(heading, monkeypatch, one_thread):
    capped, needs_data = SECTIONS[heading]
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
    blocks = _blocks(heading)
    assert blocks, f"no python block under {heading!r}"
    for code in blocks:
        exec(compile(code, f"README.md {heading}", "exec"), {"__name__": "readme"})
