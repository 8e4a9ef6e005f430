"""What Sphinx lacks for pyro_gen's API reference, as a small extension.

- **One entry per object.** A subpackage re-exports its modules' names (``pyro_gen.flows.FAMILIES``
  is ``pyro_gen.flows.families.FAMILIES``). autodoc documents every name in ``__all__``, so each
  object would be described once per module that lists it. Here a module documents only the names
  it defines: classes and functions whose ``__module__`` is that module, and constants assigned in
  its own source.
- **References by any public name.** A cross-reference to a re-exported or moved name
  (``pyro_gen.fit``, ``pyro_gen.objectives.get``) or to a short name that one documented object
  carries (``FAMILIES``, ``flow_guide``) resolves to the object's one entry. What resolves to
  nothing stays a warning, and the build treats warnings as errors.
- **Docstrings are required.** A public function, class or method of ``pyro_gen``, ``models`` or
  ``inference`` (``pyro_gen_docs_packages``) without a docstring is a warning.
"""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

from sphinx.util import logging
from sphinx.util.nodes import make_refnode

logger = logging.getLogger(__name__)


def _ours(app, name: str) -> bool:
    return name.split(".")[0] in app.config.pyro_gen_docs_packages


def _defines(module: ModuleType, name: str, obj) -> bool:
    """Whether ``name`` is defined in ``module`` itself rather than imported into it."""
    if inspect.ismodule(obj):
        return False
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__ == module.__name__
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return True
    return re.search(rf"^{re.escape(name)}\s*(:[^=\n]*)?=", source, re.M) is not None


_documenting: list[ModuleType] = []  # the module whose page autodoc is writing (set from its docstring event)


def _skip_reexport(app, what, name, obj, skip, options):
    """Skip a module member that another module defines (autodoc's own choice stands otherwise)."""
    if what == "module" and _documenting and _ours(app, _documenting[-1].__name__):
        if not _defines(_documenting[-1], name, obj):
            return True
    return None


def lookup(dotted: str):
    """Import ``a.b.c`` as far as modules go, then follow attributes; None if it does not exist."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    objects = env.get_domain("py").objects
    candidates = []
    if _ours(app, target):  # a re-exported or moved name: find the object's own entry
        obj = lookup(target)
        if obj is not None:
            leaf = target.rsplit(".", 1)[-1]
            candidates = [name for name in objects
                          if name.rsplit(".", 1)[-1] == leaf and lookup(name) is obj]
    else:  # a short name: the one documented object that carries it, preferring the same module
        suffix = "." + target
        candidates = [name for name in objects if name.endswith(suffix) and _ours(app, name)]
        if len(candidates) > 1:
            here = node.get("py:module") or ""
            near = [name for name in candidates if here and name.startswith(here + ".")]
            candidates = near or candidates
    if len(set(candidates)) != 1:
        return None
    entry = objects[candidates[0]]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, candidates[0])


def _require_docstring(app, what, name, obj, options, lines) -> None:
    if what == "module":
        _documenting[:] = [obj]
    if what not in ("function", "class", "method", "classmethod", "staticmethod", "exception"):
        return
    if name.rsplit(".", 1)[-1].startswith("_") or not _ours(app, name):
        return
    if not any(line.strip() for line in lines) and not inspect.getdoc(obj):
        logger.warning("missing docstring: %s %s", what, name, type="pyro_gen", subtype="docstring")


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.add_config_value("pyro_gen_docs_packages", ["pyro_gen", "models", "inference"], "env")
    app.connect("autodoc-skip-member", _skip_reexport)
    app.connect("missing-reference", _resolve)
    app.connect("autodoc-process-docstring", _require_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
