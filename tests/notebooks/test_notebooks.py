"""Every notebook runs top to bottom in smoke mode (PYRO_GEN_SMOKE=1: short training)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, shared_data_dir

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# notebooks that read a real data set from ../shared/data (or $PYRO_GEN_DATA), by its folder
NEEDS_DATA = {"04_topics.ipynb": "20newsgroups", "05_sequences.ipynb": "jsb_chorales"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path, monkeypatch):
    folder = NEEDS_DATA.get(path.name)
    if folder is not None:
        root = shared_data_dir()
        if root is None or not (root / folder).is_dir():
            pytest.skip(f"{path.name} needs the real {folder} data: set PYRO_GEN_DATA or put ../shared/data "
                        "beside the repository")
        monkeypatch.setenv("PYRO_GEN_DATA", str(root))
    monkeypatch.setenv("PYRO_GEN_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    # run in a scratch folder so figures the notebook writes stay out of the repository
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
