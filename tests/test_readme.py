"""README snippets run as written: each python block under a tested heading is executed."""

import re

import pytest

from tests.conftest import ROOT

TESTED = ["## Using pyro_gen with your Pyro code"]


def _blocks(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


@pytest.mark.parametrize("heading", TESTED)
def test_readme_section_runs_as_written(heading, monkeypatch, one_thread):
    blocks = _blocks(heading)
    assert blocks, f"no python block under {heading!r}"
    for code in blocks:
        exec(compile(code, f"README.md {heading}", "exec"), {"__name__": "readme"})
