"""The notebooks in ``notebooks/`` run top to bottom on a monitored city, and are stored clean.

Each notebook is executed with nbclient in a kernel started from this test's own
interpreter (the venv's ``sys.executable``, through a kernelspec written to a temporary
folder, so no kernelspec installed on the machine can substitute another Python), against
the store of ``monitored_tiny_city``: the notebooks read ``PAYESH_CITY``, ``PAYESH_STORE``
and ``PAYESH_MANIFEST`` from the kernel's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from payesh.city import load_city

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
EXPECTED = {
    "01-quickstart.ipynb",
    "02-energy.ipynb",
    "03-construction.ipynb",
    "04-scale.ipynb",
}
KERNEL_NAME = "payesh-test-venv"
CELL_TIMEOUT_S = 180
STARTUP_TIMEOUT_S = 120


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec manager that knows one kernel: this interpreter running ipykernel."""
    folder = tmp_path_factory.mktemp("kernels") / KERNEL_NAME
    folder.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "payesh (test venv)",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(folder.parent)])


@pytest.fixture(scope="module")
def kernel_env(monitored_tiny_city: tuple[Any, Path, dict[str, Any]]) -> dict[str, str]:
    gen, store, _result = monitored_tiny_city
    env = {
        **os.environ,
        "PAYESH_CITY": load_city(gen.manifest).name,
        "PAYESH_STORE": str(store),
        "PAYESH_MANIFEST": str(gen.manifest),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    env.pop("MPLBACKEND", None)  # the kernel's inline backend turns figures into PNG outputs
    return env


def test_every_notebook_is_there() -> None:
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name} cell {i} has outputs: run nbstripout on it"
        assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"{path.name} cell {i} keeps execution timing"
    verify = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, f"run `nbstripout {path.relative_to(REPO)}`: {verify.stdout}"
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    for words in ("make demo", "PAYESH_CITY", "PAYESH_STORE"):
        assert words in first.source, f"{path.name}: the first cell should mention {words}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(
    path: Path, kernel_specs: KernelSpecManager, kernel_env: dict[str, str]
) -> None:
    nb = nbformat.read(path, as_version=4)
    # one extra cell, to prove which interpreter the kernel ran
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb,
        km=km,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=STARTUP_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    # raises CellExecutionError on the first failing cell; with a km of our own, nbclient
    # shuts the kernel down and closes its channels only when asked to (cleanup_kc)
    client.execute(env=kernel_env, cleanup_kc=True)
    assert not km.has_kernel, "the kernel outlived the notebook"

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
    executable = nb.cells[-1].outputs[0]["text"].strip()
    assert Path(executable) == Path(sys.executable), (executable, sys.executable)
