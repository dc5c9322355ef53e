"""Repository hygiene: design-note citations resolve, the layers import one way (docs/design.md §2), one version
source, and importing deft6g has no side effects beyond the TensorFlow environment (docs/design.md §5)."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import deft6g
from deft6g.environment import filtered_stderr, is_load_noise

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"design\.md §(\d+)")
TEXT_SUFFIXES = {".py", ".sh", ".txt", ".toml", ".md", ".cff", ".cfg", ".ini", ".json"}


def repository_files():
    """Tracked and untracked, not ignored, text files of the checkout."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    paths = [ROOT / n for n in names]
    return [p for p in paths if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.parent.name in {"scripts", ".ci"})]


def design_sections():
    return set(re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "design.md").read_text(), flags=re.MULTILINE))


def clean_env(**overrides):
    """This process's environment without the variables deft6g or a user may set, plus `overrides`."""
    names = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    return {k: v for k, v in os.environ.items() if k not in names} | overrides


def test_design_sections_are_numbered_in_order():
    """docs/design.md's top-level sections are numbered 1, 2, ... without gaps, so a citation's number is stable."""
    numbers = re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "design.md").read_text(), flags=re.MULTILINE)
    assert numbers == [str(i) for i in range(1, len(numbers) + 1)] and len(numbers) >= 8


def test_every_design_citation_names_an_existing_section():
    """Every "design.md §n" in code, tests, scripts and docs names a section docs/design.md has."""
    sections = design_sections()
    cited = {(str(p.relative_to(ROOT)), n) for p in repository_files()
             for n in CITATION.findall(p.read_text(errors="replace"))}
    assert len(cited) >= 10, cited          # the layers cite the notes; none found means the pattern broke
    assert [c for c in sorted(cited) if c[1] not in sections] == []


def test_no_citation_of_the_old_internal_notes():
    """The internal notes file is no longer cited anywhere; docs/design.md is the project's own."""
    old = "DESIGN" + ".md"
    hits = [str(p.relative_to(ROOT)) for p in repository_files() if old in p.read_text(errors="replace")]
    assert hits == []


LAYERS = {"deft6g.phy": "phy", "deft6g.optim": "optim", "deft6g.finetune.peft": "finetune/peft",
          "deft6g.finetune.federation": "finetune/federation", "deft6g.finetune.techniques": "finetune/techniques",
          "deft6g.benchmarks": "benchmarks"}      # in order: package -> source folder (pyproject's package-dir)


def layer_rank(module):
    """Position in LAYERS of the layer holding `module` (deft6g.finetune itself imports all three of its
    subpackages); -1 outside the layers (deft6g's root: checks, rng, experiment, ...; third-party)."""
    if module == "deft6g.finetune":
        module = "deft6g.finetune.techniques"
    return next((i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")), -1)


def imported_modules(path, package):
    """The absolute names of the modules a source file of `package` imports (relative imports resolved)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            yield ".".join(part for part in (base, node.module) if part)


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_before_it(layer):
    """phy <- optim <- finetune (peft <- federation <- techniques) <- benchmarks: no module, at any depth of its
    source, imports from a later layer (read without importing anything)."""
    folder, rank = ROOT / LAYERS[layer], list(LAYERS).index(layer)
    later = [f"{path.relative_to(ROOT)}: {name}" for path in sorted(folder.rglob("*.py"))
             for name in imported_modules(path, ".".join([layer, *path.relative_to(folder).parent.parts]))
             if layer_rank(name) > rank]
    assert later == []


def test_version_has_one_source():
    """`deft6g --version`, deft6g.__version__ and CITATION.cff all give the installed distribution's version."""
    installed = importlib.metadata.version("deft6g")
    assert deft6g.__version__ == installed
    script = shutil.which("deft6g", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "deft6g.benchmarks.cli"]
    out = subprocess.run(command + ["--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"deft6g {installed}\n"
    assert re.search(r"^version: (\S+)$", (ROOT / "CITATION.cff").read_text(), re.MULTILINE).group(1) == installed


def test_import_sets_the_tensorflow_environment_only():
    """In a clean environment `import deft6g` sets legacy Keras and the log level but leaves the model hub
    online (a notebook can still download hub models); a value the user exported is kept."""
    code = ("import os, deft6g; print([os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', "
            "'TF_USE_LEGACY_KERAS', 'TF_CPP_MIN_LOG_LEVEL')])")
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[None, None, '1', '2']"
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(TF_CPP_MIN_LOG_LEVEL="0", HF_HUB_OFFLINE="1"),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['1', None, '1', '0']"


def test_import_phy_prints_nothing():
    """`python -c "import deft6g.phy"` in a clean environment writes nothing to stdout or stderr (on a CPU-only
    machine TensorFlow's libraries otherwise print absl's pre-init notice and 'Could not find cuda drivers')."""
    out = subprocess.run([sys.executable, "-c", "import deft6g.phy"], env=clean_env(), capture_output=True,
                         text=True, check=True)
    assert (out.stdout, out.stderr) == ("", "")


NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = b"I0000 00:00:1796291483.455729   13215 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
ERROR = b"E0000 00:00:1796291580.785101   13724 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
PYTHON = b"/x.py:3: UserWarning: I0000 is not a log line here\n"


@pytest.mark.parametrize("level, kept", [
    (0, [NOTICE, INFO, ERROR, PYTHON]),
    (1, [ERROR, PYTHON]),
    (2, [ERROR, PYTHON]),
    (3, [PYTHON]),
])
def test_load_noise_follows_the_log_level(level, kept):
    """Native absl lines below TF_CPP_MIN_LOG_LEVEL (I = 0, W = 1, E = 2, F = 3) and absl's notice (level >= 1)
    are noise; anything else, such as a Python warning, is always kept."""
    assert [line for line in (NOTICE, INFO, ERROR, PYTHON) if not is_load_noise(line, level)] == kept


def test_filtered_stderr_writes_back_what_is_kept(capfd, monkeypatch):
    """Bytes written to file descriptor 2 inside the block come back afterwards, the noise lines removed."""
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        for line in (NOTICE, INFO, ERROR, PYTHON):
            os.write(2, line)
        assert capfd.readouterr().err == ""          # held back while the block runs
    assert capfd.readouterr().err == (ERROR + PYTHON).decode()
