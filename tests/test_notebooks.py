"""The tutorials of docs/tutorials are committed executed, with their outputs, so that the site shows what each cell
prints and plots (docs/contributing.md says why); the test suite executes them afresh and fails if the committed
copy is stale.

Each notebook runs with nbclient on a kernel of the running interpreter (a kernelspec written to a temporary
folder, so nothing needs `jupyter kernelspec install`), with the notebook's working folder set to a temporary one
(it writes nothing in the repository) and at most NOTEBOOK_TIMEOUT_S seconds for the whole notebook. Every notebook
asserts its own checks against theory (the Monte-Carlo MSE against the closed form, the uplink's channel uses
against ceil(L/2), a recomputed summary against summary.csv, ...), so a wrong number fails as an error in that
cell. The fresh run must print nothing on stderr and raise nothing, and the committed copy must match it cell by
cell: the same outputs of the same kinds (stdout, figure, ...) and the same printed text once every number is
masked (numbers may differ in their last digits between machines; a changed message, a missing figure or a
cell's output missing from the committed copy fail).

Regenerate the committed notebooks after a change (from the repository root, about 3 minutes on 2 cores):

    DEFT6G_REGENERATE_NOTEBOOKS=1 .venv/bin/python -m pytest -q tests/test_notebooks.py
"""

import json
import os
import re
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
REGENERATE = os.environ.get("DEFT6G_REGENERATE_NOTEBOOKS") == "1"
REGENERATE_COMMAND = "DEFT6G_REGENERATE_NOTEBOOKS=1 .venv/bin/python -m pytest -q tests/test_notebooks.py"
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?|\bnan\b|\binf\b")


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


def signature(output):
    """What a cell output must keep between runs: its kind (stream name or output type with its MIME types) and,
    for text, the text with every number replaced by `#` and runs of blanks collapsed."""
    if output["output_type"] == "stream":
        kind, text = f"stream:{output['name']}", output["text"]
    elif output["output_type"] == "error":
        kind, text = "error", output["ename"]
    else:
        kind, text = f"{output['output_type']}:{','.join(sorted(output['data']))}", output["data"].get("text/plain", "")
    return kind, " ".join(NUMBER.sub("#", text).split())


def problems(nb):
    """The outputs no committed tutorial may have: errors and anything written to stderr (warnings, progress bars,
    TensorFlow's log lines), as 'cell N: what' lines."""
    return [f"cell {i}: {output.get('name') or output['output_type']}: {output.get('text') or output.get('evalue')}"
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code" for output in cell.outputs
            if output["output_type"] == "error" or output.get("name") == "stderr"]


def test_every_tutorial_is_listed_and_committed_executed():
    """The test runs exactly the notebooks in docs/tutorials, and each is committed as one run from top to bottom
    left it: code cells numbered 1, 2, 3, ... in order, some output, no error and nothing on stderr."""
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
            f"{name} is not committed as executed once from the top; regenerate it: {REGENERATE_COMMAND}"
        assert any(c.outputs for c in code), name
        assert problems(nb) == [], name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_and_matches_its_committed_outputs(name, tmp_path):
    """Executes the notebook; any exception, failed assertion, stderr output or cell past the notebook's deadline
    fails, and so does a committed output that no longer matches the fresh one (see the module docstring). With
    DEFT6G_REGENERATE_NOTEBOOKS=1 the fresh run replaces the committed notebook instead."""
    committed = nbformat.read(TUTORIALS / name, as_version=4)
    nb = nbformat.from_dict(json.loads(json.dumps(committed)))        # a copy, executed in place
    work = tmp_path / "work"
    work.mkdir()
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    km = kernel_manager(tmp_path)
    cpu = []
    client = nbclient.NotebookClient(nb, km=km, resources={"metadata": {"path": str(work)}},
                                     timeout_func=lambda source: max(1, int(deadline - time.monotonic())),
                                     on_cell_executed=lambda **cell: cpu.append(kernel_cpu_seconds(km)),
                                     record_timing=False, coalesce_streams=True)
    t0 = time.monotonic()
    client.execute()
    print(f"{name}: executed in {time.monotonic() - t0:.1f} s, kernel CPU {cpu[-1]:.1f} s (user + system, with the "
          f"processes it ran), load average {os.getloadavg()[0]:.1f}")
    assert problems(nb) == [], f"{name} writes to stderr or fails:\n" + "\n".join(problems(nb))
    if REGENERATE:
        nbformat.write(nb, TUTORIALS / name)
        return
    for i, (old, new) in enumerate(zip(committed.cells, nb.cells)):
        if new.cell_type == "code":
            assert [signature(o) for o in old.outputs] == [signature(o) for o in new.outputs], \
                f"{name}, cell {i}: committed outputs stale (left: committed, right: this run): {REGENERATE_COMMAND}"
