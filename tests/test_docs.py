"""The documentation site: `mkdocs build --strict` passes, the API reference lists every public name, the design-note
citations of the docstrings link to existing sections, and a real browser (Debian's Chromium, headless, through
Selenium) finds `AirCompUplink` with the search box, reads its rendered formulas, follows its link to a tutorial
and sees no console error. docs/contributing.md says how to build the site and install the browser."""

import ast
import functools
import html
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"deft6g.phy": "phy", "deft6g.optim": "optim", "deft6g.finetune": "finetune",
            "deft6g.experiment": "deft6g/experiment"}   # pyproject's package-dir; docs/api/<last part>.md
TUTORIAL = "tutorials/02_lora_over_aircomp.ipynb"        # linked from AirCompUplink's entry (docs/api/phy.md)
WAIT_S = 30                                              # a loaded 2-core machine can be slow to run the search


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by `mkdocs build --strict` (warnings are errors) into a temporary folder."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mkdocs is not installed in this environment: it comes with the `test` extra "
                    "(bash scripts/setup.sh)")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-6000:]}"
    return out


def exported_names(folder):
    """The names a package's __init__.py imports from its own modules, in order."""
    tree = ast.parse((ROOT / folder / "__init__.py").read_text())
    return [alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names]


def test_site_builds_in_strict_mode(site):
    """The build (the fixture) passed; the pages the nav promises exist and the maths assets are shipped."""
    for page in ["index.html", "commands/study/index.html", "commands/link/index.html", "architecture/index.html",
                 "design/index.html", "contributing/index.html", "api/phy/index.html"]:
        assert (site / page).is_file(), page
    assert (site / "assets/katex/katex.min.js").is_file()
    for notebook in (ROOT / "docs/tutorials").glob("*.ipynb"):                 # each page offers its notebook
        page = site / "tutorials" / notebook.stem
        assert f'href="{notebook.name}" download' in (page / "index.html").read_text()
        assert (page / notebook.name).read_bytes() == notebook.read_bytes()
    tables = len(re.findall(r"^\|[-:| ]+\|$", (ROOT / "docs/tables/link.md").read_text(), flags=re.MULTILINE))
    assert tables >= 1 and (site / "commands/link/index.html").read_text().count("<table>") == tables   # snippets


def test_home_page_shows_the_readme_examples(site):
    """The home page's examples are README.md's ```python blocks, included at build time (docs/hooks/site.py),
    every line of each as it stands in the README."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.MULTILINE | re.DOTALL)
    text = html.unescape(re.sub(r"<[^>]+>", "", (site / "index.html").read_text()))
    assert blocks and [b for b in blocks if b not in text] == []


@pytest.mark.parametrize("package", PACKAGES)
def test_api_reference_lists_every_public_name(package):
    """Each name the package's __init__.py imports has exactly one `::: package.Name` line on its API page (a
    module's own docstring is rendered by a `::: package.module` line with options)."""
    page = (ROOT / "docs/api" / (package.rsplit(".", 1)[1] + ".md")).read_text()
    listed = re.findall(r"^::: " + re.escape(package) + r"\.(\w+)\n(?! +options:)", page, flags=re.MULTILINE)
    assert sorted(listed) == sorted(exported_names(PACKAGES[package]))


def test_api_reference_renders_sionna_docstrings(site):
    """AirCompUplink's entry has its Parameters, Input and Output lists and its :math: roles as maths; an entry
    without a description has no dangling dash."""
    html = (site / "api/phy/index.html").read_text()
    start = html.index('id="deft6g.phy.AirCompUplink"')
    entry = html[start:html.index('id="deft6g.phy.OBDAResult"')]
    for title in ("Parameters", "Input", "Output"):
        assert f'<span class="doc-section-title">{title}</span>' in entry, title
    assert "<b><code>noise_var</code></b>" in entry and ":math:" not in entry
    assert r'<span class="arithmatex">\(\sigma^2\)</span>' in entry
    assert not re.search(r'–\s*<div class="doc-md-description">\s*</div>', html)   # no dash before nothing


def test_console_examples_in_a_description_render_as_code(site):
    """A `>>>` example written in a docstring's description (noise_var's, no Example heading) is a Python console
    block, not Markdown's nested quotes."""
    html = (site / "api/phy/index.html").read_text()
    start = html.index('id="deft6g.phy.noise_var"')
    entry = html[start:html.index('id="deft6g.phy.pack"')]
    assert "<blockquote>" not in entry
    assert re.search(r'<code>.*noise_var.*10\.0', entry, flags=re.DOTALL) and "1.9952623149688795" in entry


def test_docstring_entries_packed_on_one_line_are_split():
    """`H : type; a : type -- text;` in a Parameters/Input/Output section reads as two entries (the hook that parses
    the Sionna form, docs/hooks/sionna_docstrings.py), as if each had its own line."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("sionna_docstrings", ROOT / "docs/hooks/sionna_docstrings.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    entries = hook.parse_entries(["H : [B, N, K], complex; a : [B, N], complex -- the receive vector;",
                                  "    of the server"])
    assert [(e.name, e.annotation, e.description) for e in entries] == [
        ("H", "[B, N, K], complex", ""), ("a", "[B, N], complex", "the receive vector\nof the server")]


def test_design_citations_link_to_their_sections(site):
    """Every "docs/design.md §n" of a rendered docstring is a link to an anchor the design-notes page has."""
    anchors = set(re.findall(r'id="([^"]+)"', (site / "design/index.html").read_text()))
    links = [a for page in (site / "api").glob("*/index.html")
             for a in re.findall(r'href="\.\./\.\./design/#([^"]+)">(?:docs/)?design\.md §\d+', page.read_text())]
    assert len(links) >= 3, links                       # design_aircomp, the aggregators, the data splits cite §3/§8
    assert [a for a in links if a not in anchors] == []


# --- the browser test ---------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url(site):
    """The built site served on localhost by http.server, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through its chromedriver (nothing downloaded), keeping the console log."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("the browser test needs Chromium and chromedriver on the PATH (Debian: apt-get install chromium "
                    "chromium-driver; see docs/contributing.md)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield chrome
    chrome.quit()


def console_errors(chrome):
    """The SEVERE entries of the browser console since the last call."""
    return [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]


def search_and_open(chrome, base_url, query, page, anchor):
    """Type `query` into the search box of the home page and follow the result that links to `page`#`anchor`
    (the search adds `?h=query` to the page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    chrome.get(base_url)
    box = WebDriverWait(chrome, WAIT_S).until(ec.element_to_be_clickable((By.CSS_SELECTOR, "input.md-search__input")))
    box.click()
    box.send_keys(query)
    target = re.compile(re.escape(page) + r"(\?[^#]*)?#" + re.escape(anchor) + "$")
    results = WebDriverWait(chrome, WAIT_S).until(lambda c: [
        a for a in c.find_elements(By.CSS_SELECTOR, ".md-search-result a") if target.search(a.get_attribute("href"))])
    results[0].click()
    WebDriverWait(chrome, WAIT_S).until(lambda c: target.search(c.current_url))


def test_browser_finds_aircompuplink_and_renders_its_maths(browser, base_url):
    """Search box -> AirCompUplink's API entry; KaTeX rendered its formulas (no KaTeX error); no console error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    console_errors(browser)
    search_and_open(browser, base_url, "AirCompUplink", "api/phy/", "deft6g.phy.AirCompUplink")
    entry = browser.find_element(By.ID, "deft6g.phy.AirCompUplink").find_element(By.XPATH, "..")
    WebDriverWait(browser, WAIT_S).until(lambda c: entry.find_elements(By.CSS_SELECTOR, ".arithmatex .katex"))
    assert len(entry.find_elements(By.CSS_SELECTOR, ".arithmatex .katex-mathml math")) >= 3
    assert browser.find_elements(By.CSS_SELECTOR, ".katex-error") == []
    assert console_errors(browser) == []


def test_browser_follows_the_api_link_to_a_tutorial(browser, base_url):
    """From AirCompUplink's API entry, its link opens the rendered notebook with its outputs (text and figures); no
    console error on the way."""
    if not (ROOT / "docs" / TUTORIAL).is_file():
        pytest.skip(f"docs/{TUTORIAL} is not in this checkout (the notebooks come from the tutorials branch)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    console_errors(browser)
    search_and_open(browser, base_url, "AirCompUplink", "api/phy/", "deft6g.phy.AirCompUplink")
    link = browser.find_element(By.CSS_SELECTOR, f'a[href*="{Path(TUTORIAL).stem}"]')
    browser.execute_script("arguments[0].scrollIntoView()", link)
    link.click()
    WebDriverWait(browser, WAIT_S).until(lambda c: Path(TUTORIAL).stem in c.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, ".jupyter-wrapper .jp-Cell")
    # the committed outputs are shown: printed text and a figure the browser decoded
    assert browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedText.jp-OutputArea-output pre")
    figures = browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage.jp-OutputArea-output img")
    assert figures and all(browser.execute_script("return arguments[0].naturalWidth", f) > 0 for f in figures)
    assert console_errors(browser) == []
