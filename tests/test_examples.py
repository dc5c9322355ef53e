"""Every `>>>` example in the library's docstrings runs and prints what it shows (stdlib doctest, one case per
module), and every ```python block of README.md and of the docs' pages runs: a wrong example fails the suite
(issue 28)."""

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"deft6g": "deft6g", "phy": "deft6g.phy", "optim": "deft6g.optim", "finetune": "deft6g.finetune",
            "benchmarks": "deft6g.benchmarks"}       # source folder -> import name (pyproject's package-dir)
PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
README_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def module_name(path):
    """Import name of a library source file, e.g. phy/mcs.py -> deft6g.phy.mcs."""
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    return ".".join([PACKAGES[folder]] + [p for p in rest if p != "__init__"])


def files_with_examples():
    """The library's source files whose text has a `>>>` prompt line (found without importing anything)."""
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py") if PROMPT.search(p.read_text()))


@pytest.mark.parametrize("path", files_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_examples(path):
    """Each docstring's examples run in a fresh namespace (so they import what they use, as a reader must) and
    print what they show; every `>>>` line of the file belongs to an example doctest found and ran."""
    module = importlib.import_module(module_name(path))
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, globs={})
    assert sum(len(t.examples) for t in tests) == len(PROMPT.findall(path.read_text())), \
        ("some `>>>` lines are outside the docstrings doctest finds (a nested function, a plain string, an object "
         "imported from elsewhere)")
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def readme_blocks():
    """One case per ```python block of README.md and docs/**/*.md: (where: file:line of the fence, code)."""
    cases = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text, name = path.read_text(), str(path.relative_to(ROOT))
        cases += [pytest.param(f"{name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1),
                               id=f"{name}:{text.count(chr(10), 0, m.start()) + 1}")
                  for m in README_BLOCK.finditer(text)]
    return cases


@pytest.mark.parametrize("where, code", readme_blocks())
def test_readme_python_blocks_run(where, code, tmp_path, monkeypatch):
    """A README or docs code block runs as a user would paste it, in an empty folder (what it writes lands
    there); a command it registers is removed afterwards, so it does not leak into later tests."""
    from deft6g.experiment import COMMANDS
    monkeypatch.chdir(tmp_path)
    registered = dict(COMMANDS)
    try:
        exec(compile(code, where, "exec"), {"__name__": "__readme__"})
    finally:
        COMMANDS.clear()
        COMMANDS.update(registered)
