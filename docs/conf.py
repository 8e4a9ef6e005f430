"""Sphinx configuration of pyro_gen's documentation site (``make docs``).

The site is built offline: autodoc and napoleon read the Google-style docstrings, myst-nb
executes the notebooks during the build (``PYRO_GEN_SMOKE=1`` runs them in smoke mode), furo
is the theme, and MathJax is served from the copy that ``sphinx-mathjax-offline`` ships, so no
page asks the network for anything. What Sphinx lacks is in ``_ext/pyro_gen_sphinx.py``; here, the
choice of notebooks to execute when a real data set is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent / "_ext")]  # models/ and inference/ live beside the package
# the notebook kernels are separate processes: they find models/ through PYTHONPATH
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import pyro_gen  # noqa: E402

SMOKE = os.environ.get("PYRO_GEN_SMOKE") == "1"

project = "pyro_gen"
author = "the pyro_gen developers"
copyright = "2026, the pyro_gen developers"
release = version = pyro_gen.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "pyro_gen_sphinx",  # docs/_ext: one entry per object, references by any public name, docstrings required
]
pyro_gen_docs_packages = ["pyro_gen", "models", "inference"]  # the packages whose API pyro_gen_sphinx checks
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# -- cross-references: every one into pyro_gen must resolve ---------------------------------
# There is no network here, so no intersphinx: references to other libraries (torch, Pyro,
# NumPy, the standard library) are left as plain text; a reference to a pyro_gen name that does
# not exist is a warning, and the build runs with warnings as errors.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|pyro|numpy|np|scipy|sklearn|arviz|az|xarray|matplotlib|zuko|tqdm|pandas)(\..*)?"),
    (r"py:.*", r"(typing|collections|pathlib|os|argparse|logging|contextlib|dataclasses|enum|abc)(\..*)?"),
    (r"py:.*", r"(Path|Tensor|Module|Callable|Iterable|Iterator|Sequence|Mapping|Any|Literal|Optional|Union)"),
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|object|type|None|NoneType|slice|range)"),
    (r"py:.*", r"(Distribution|TorchDistribution|Transform|TransformModule|PyroModule|ELBO|Trace_ELBO|Dataset)"),
    (r"py:.*", r"(nn|dist|optim|T)\..*"),
    (r"py:.*", r"(optional|array-like|callable|default|iterable|one of)( .*)?"),
    (r"py:.*", r"(Generator|DataLoader|Optimizer|LRScheduler|InferenceData|Figure|Axes|ndarray|dtype|device)"),
    (r"py:.*", r"(torchvision|ExpandedDistribution)(\..*)?"),
    (r"py:.*", r"(dict|tuple|list)\[.*"),  # a generic type split at its comma by the type-field parser
    (r"py:class", r"(pyro_gen\.infer\.particles\.)?T"),  # a TypeVar
    (r"py:class", r"(pyro_gen|models)\..*\._\w+"),  # a private base class
]

# -- API reference ---------------------------------------------------------------------------
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes: as fields, not as attribute entries that undoc-members would repeat
add_module_names = False
python_maximum_signature_line_length = 88  # one parameter per line in long signatures

# -- notebooks ------------------------------------------------------------------------------
# the tutorials in notebooks/ (linked from docs/tutorials) run during every build: smoke mode
# with PYRO_GEN_SMOKE=1, their normal sizes otherwise
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 60 * 60
nb_execution_raise_on_error = False  # a failing cell is a warning (an error under -W) that shows its traceback
nb_execution_show_tb = True
nb_execution_in_temp = True  # figures the notebooks write stay out of the repository
nb_merge_streams = True

# notebooks that read a real data set (from $PYRO_GEN_DATA or ../shared/data), by its folder;
# without it they are shown unexecuted, with a note
NEEDS_DATA = {"04_topics": "20newsgroups", "05_sequences": "jsb_chorales"}


def _data_root() -> Path | None:
    for candidate in (os.environ.get("PYRO_GEN_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


DATA = _data_root()
if DATA is not None:
    os.environ["PYRO_GEN_DATA"] = str(DATA)
NOT_EXECUTED = sorted(name for name, folder in NEEDS_DATA.items() if DATA is None or not (DATA / folder).is_dir())
nb_execution_excludepatterns = [f"tutorials/{name}.ipynb" for name in NOT_EXECUTED]

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pyro_gen {version}"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_show_sourcelink = False
# MathJax 3 from the sphinx-mathjax-offline package, copied into the site (see setup below);
# its SVG output carries its own glyphs, so no web font is fetched
mathjax_path = "mathjax/tex-svg.js"


def _mathjax_dir() -> Path:
    import importlib

    return Path(importlib.import_module("sphinx-mathjax-offline").__file__).parent / "static" / "mathjax"


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        shutil.copytree(_mathjax_dir(), Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    app.add_config_value("pyro_gen_not_executed", NOT_EXECUTED, "env")
