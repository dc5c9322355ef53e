"""MkDocs hooks for deft6g's documentation site (mkdocs.yml `hooks:`).

1. The API reference reads the sources statically (griffe), which looks packages up by folder. The repository
   keeps `deft6g.phy` in phy/, `deft6g.optim` in optim/ etc. (pyproject's `[tool.setuptools.package-dir]`), so
   before the build the installed layout is rebuilt from that table with symbolic links in build/docs-api-src/,
   the path mkdocstrings searches.
2. The tutorials are notebooks that arrive from their own branch. A notebook of the nav that is not in this
   checkout is left out of the nav, and lines linking to it are left out of the pages, with an INFO line each,
   so that a strict build of a checkout without them passes. Any other missing page stays a strict-mode error.
3. A tutorial's page ends with a link to download the notebook (mkdocs-jupyter's `include_source` copies it
   beside the page).
4. An API entry without a description (`h : [..., N, S], tf.complex`) is shown without the dangling " – " that
   mkdocstrings writes before the (empty) description.
5. The home page shows the README's Python examples without a copy: the line `<!-- README python blocks -->` of a
   page is replaced by the ```python blocks of README.md, in order (one source; tests/test_examples.py runs them).
"""

import logging
import re
import shutil
import tomllib
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority

log = logging.getLogger("mkdocs.hooks.deft6g")
API_SRC = "build/docs-api-src"   # mkdocs.yml: plugins.mkdocstrings.handlers.python.paths
_missing: set[str] = set()       # nav notebooks (paths relative to docs/) absent from this checkout
EMPTY_DESCRIPTION = re.compile(r"\s*–\s*<div class=\"doc-md-description\">\s*</div>")
README_MARKER = re.compile(r"^<!-- README python blocks -->$", re.MULTILINE)   # a line of its own
README_BLOCK = re.compile(r"^```python\n.*?^```$", re.MULTILINE | re.DOTALL)   # as tests/test_examples.py reads them


def stage_packages(root: Path) -> Path:
    """Rebuild the installed `deft6g` package under root/API_SRC from pyproject's package-dir (links, no copies).
    Returns the staging folder."""
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    stage = root / API_SRC
    shutil.rmtree(stage, ignore_errors=True)
    top = stage / "deft6g"
    top.mkdir(parents=True)
    for entry in (root / table["deft6g"]).iterdir():
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry.resolve())
    for name, folder in table.items():
        if name != "deft6g":
            (stage / name.replace(".", "/")).symlink_to((root / folder).resolve(), target_is_directory=True)
    return stage


def _prune(nav, docs_dir: Path):
    """`nav` without the notebooks missing from `docs_dir` (recorded in `_missing`) and without emptied sections."""
    kept = []
    for item in nav:
        path = item
        if isinstance(item, dict):
            (title, path), = item.items()
            if isinstance(path, list):
                section = _prune(path, docs_dir)
                if section:
                    kept.append({title: section})
                continue
        if isinstance(path, str) and path.endswith(".ipynb") and not (docs_dir / path).exists():
            _missing.add(path)
            continue
        kept.append(item)
    return kept


@event_priority(100)   # before mkdocstrings', which drops search paths that do not exist yet
def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    stage_packages(root)
    _missing.clear()
    if config.nav:
        config.nav = _prune(config.nav, Path(config.docs_dir))
    for path in sorted(_missing):
        log.info("tutorial %s is not in this checkout: left out of the nav and of the pages' links", path)
    return config


def readme_python_blocks(root: Path) -> str:
    """The ```python blocks of root/README.md, fences included, separated by blank lines."""
    blocks = README_BLOCK.findall((root / "README.md").read_text())
    if not blocks:
        raise PluginError(f"{root / 'README.md'} has no ```python block for the line {README_MARKER.pattern!r}")
    return "\n\n".join(blocks)


def on_page_markdown(markdown, page, config, files):
    if README_MARKER.search(markdown):
        blocks = readme_python_blocks(Path(config.config_file_path).parent)
        markdown = README_MARKER.sub(lambda _: blocks, markdown)
    if not _missing:
        return markdown
    names = [re.escape(Path(p).name) for p in _missing]
    link = re.compile(r"\]\([^)\s]*(?:" + "|".join(names) + r")(?:#[^)\s]*)?\)")
    kept = [line for line in markdown.split("\n") if not link.search(line)]
    return "\n".join(kept)


def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        name = Path(page.file.src_uri).name
        html += (f'\n<p>Run it yourself: <a href="{name}" download>download the notebook ({name})</a>; it runs '
                 f"from top to bottom in a deft6g environment (<code>bash scripts/setup.sh</code>).</p>")
    return EMPTY_DESCRIPTION.sub("", html)
