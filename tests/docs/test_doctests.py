"""Docstring examples run as doctests: every module of pyro_gen, models/ and inference/ with an
example in its docstrings (the API reference renders the same examples)."""

import doctest
import importlib
import pkgutil

import pytest

import pyro_gen
from tests.conftest import ROOT

MODULES = (["pyro_gen"] + [m.name for m in pkgutil.walk_packages(pyro_gen.__path__, "pyro_gen.")]
           + [f"models.{p.stem}" for p in sorted((ROOT / "models").glob("*.py")) if p.stem != "__init__"]
           + [f"inference.{p.stem}" for p in sorted((ROOT / "inference").glob("*.py")) if p.stem != "__init__"])
FINDER = doctest.DocTestFinder(exclude_empty=True)


def _examples(modname: str) -> list[doctest.DocTest]:
    return [t for t in FINDER.find(importlib.import_module(modname), modname) if t.examples]


WITH_EXAMPLES = [m for m in MODULES if _examples(m)]


def test_the_public_api_has_examples():
    """The entry points a new user meets first show an example (so this suite cannot pass empty)."""
    for name in ["pyro_gen.infer.train", "pyro_gen.infer.objectives", "pyro_gen.data.datasets",
                 "pyro_gen.data.checks", "pyro_gen.flows.families", "pyro_gen.exact.hmm"]:
        assert name in WITH_EXAMPLES, f"{name} has no docstring example"


@pytest.mark.parametrize("modname", WITH_EXAMPLES)
def test_docstring_examples(modname, one_thread):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in _examples(modname):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
