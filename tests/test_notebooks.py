"""The tutorials of docs/tutorials run from top to bottom: each is executed with nbclient on a kernel of the
running interpreter (a kernelspec written to a temporary folder, so nothing needs `jupyter kernelspec install`),
with the notebook's working folder set to a temporary one (it writes nothing in the repository) and at most
NOTEBOOK_TIMEOUT_S seconds for the whole notebook. Every notebook asserts its own checks against theory (the
Monte-Carlo MSE against the closed form, the uplink's channel uses against ceil(L/2), a recomputed summary
against summary.csv, ...), so a wrong number fails here as an error in that cell.

With DEFT6G_NOTEBOOK_OUT set, the executed notebooks and the PNG figures they display are written to that
folder, for reading them (the saved notebooks carry no outputs)."""

import base64
import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the tutorials need the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="the tutorials need the test extra: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="the tutorials need the test extra: pip install -e '.[test]'")
from jupyter_client import KernelManager  # noqa: E402  (installed with nbclient)
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = ["01_aircomp_beamformer.ipynb", "02_lora_over_aircomp.ipynb", "03_your_own_study.ipynb",
             "04_results_folder.ipynb"]
NOTEBOOK_TIMEOUT_S = 600
KERNEL = "deft6g-tests"


def kernel_manager(folder):
    """A KernelManager whose only kernelspec starts `sys.executable -m ipykernel_launcher`, talking over
    Unix sockets in `folder` (no TCP ports)."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "deft6g tests", "language": "python"}))
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
                         transport="ipc", ip=str(folder / "kernel"))       # local sockets, in the test's folder


def kernel_cpu_seconds(km):
    """CPU seconds (user + system) of the kernel process and of the child processes it has waited for."""
    import psutil                                 # a dependency of ipykernel
    t = psutil.Process(km.provisioner.pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def save_outputs(nb, name, out):
    """The executed notebook and its displayed PNGs (name-NN.png) in the folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / name)
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                count += 1
                (out / f"{Path(name).stem}-{count:02d}.png").write_bytes(base64.b64decode(png))


def test_every_tutorial_is_listed():
    """The test runs exactly the notebooks in docs/tutorials, and they are saved without outputs (the test
    executes them; the docs render them)."""
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs(name, tmp_path):
    """Executes the notebook; any exception, failed assertion or cell past the notebook's deadline fails."""
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    km = kernel_manager(tmp_path)
    cpu = []
    client = nbclient.NotebookClient(nb, km=km, resources={"metadata": {"path": str(work)}},
                                     timeout_func=lambda source: max(1, int(deadline - time.monotonic())),
                                     on_cell_executed=lambda **cell: cpu.append(kernel_cpu_seconds(km)))
    t0 = time.monotonic()
    try:
        client.execute()
    finally:
        if os.environ.get("DEFT6G_NOTEBOOK_OUT"):
            save_outputs(nb, name, Path(os.environ["DEFT6G_NOTEBOOK_OUT"]))
    print(f"{name}: executed in {time.monotonic() - t0:.1f} s, kernel CPU {cpu[-1]:.1f} s (user + system, with the "
          f"processes it ran), load average {os.getloadavg()[0]:.1f}")
