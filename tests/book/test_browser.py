"""The built book in a real browser: headless Chromium driven by Selenium.

Opens every page of the HTML book that ``make test-build`` wrote
(``_build/test/_build/html``, served on 127.0.0.1) and checks what a reader
sees: no console errors, every equation typeset by MathJax, every figure
loaded, every internal link and anchor resolving, search finding the chapters
that hold a word, and a hidden solution opening when clicked.

Skipped, with the reason, when the book was not built or Chromium,
chromedriver or Selenium are missing (``make test-browser`` installs Selenium;
``.ci/run`` installs Chromium and chromedriver with apt-get).
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "test" / "_build" / "html"

webdriver = pytest.importorskip("selenium.webdriver", reason="Selenium is not installed "
                                "(pip install -r requirements-browser.txt)")


def _pages() -> list[str]:
    if not HTML.is_dir():
        return []
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if not p.name.startswith("_") and "_static" not in p.parts
                  and p.name not in ("genindex.html", "search.html"))


PAGES = _pages()


@pytest.fixture(scope="module")
def server():
    if not PAGES:
        pytest.skip(f"the book is not built at {HTML}: run 'make test-build'")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _open(browser, url: str) -> None:
    browser.get(url)
    # MathJax 3 typesets asynchronously: wait for its startup promise
    browser.set_script_timeout(120)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
            MathJax.startup.promise.then(() => done(true), () => done(false));
        } else { done(true); }
    """)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly(server, browser, page):
    browser.get_log("browser")                       # drop what earlier pages logged
    _open(browser, server + page)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"{page}: console errors: {errors}"

    text = browser.execute_script("return document.querySelector('main, article, body').innerText")
    for raw in ("$$", "\\(", "\\[", "\\frac", "\\begin{"):
        assert raw not in text, f"{page}: untypeset maths {raw!r} in the rendered text"
    source = (HTML / page).read_text()
    if "\\(" in source or "\\[" in source or "math notranslate" in source:
        assert browser.execute_script("return document.querySelectorAll('mjx-container').length") > 0

    broken = browser.execute_script("""
        return Array.from(document.images)
            .filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src);""")
    assert not broken, f"{page}: images that did not load: {broken}"


def test_internal_links_and_anchors_resolve(server):
    if not PAGES:
        pytest.skip("the book is not built")
    ids = {}
    for page in PAGES + ["genindex.html", "search.html"]:
        path = HTML / page
        if path.is_file():
            ids[page] = set(re.findall(r'\bid="([^"]+)"', path.read_text()))
    bad = []
    for page in PAGES:
        for href in re.findall(r'\bhref="([^"]+)"', (HTML / page).read_text()):
            if urlparse(href).scheme or href.startswith(("mailto:", "//", "javascript:")):
                continue
            target, anchor = urldefrag(urljoin(page, unquote(href)))
            target = urlparse(target).path or page          # drop ?v=... cache busters
            if target.endswith("/"):
                target += "index.html"
            if not (HTML / target).exists():
                bad.append(f"{page}: {href} -> missing {target}")
            elif anchor and target.endswith(".html") and anchor not in ids.get(target, set()):
                bad.append(f"{page}: {href} -> no anchor #{anchor} in {target}")
    assert not bad, "\n".join(bad[:30])


def _chapters_containing(word: str) -> set[str]:
    found = set()
    for nb in (ROOT / "chapters").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        if any(word.lower() in "".join(c["source"]).lower() for c in cells
               if c["cell_type"] == "markdown"):
            found.add(nb.stem)
    return found


@pytest.mark.parametrize("word", ["momentum", "Santurkar"])
def test_search_finds_the_chapters(server, browser, word):
    from selenium.webdriver.support.ui import WebDriverWait

    expected = _chapters_containing(word)
    assert expected, word
    browser.get(server + f"search.html?q={word}")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "const s = document.querySelector('#search-results');"
        "return s && s.querySelector('p.search-summary') && "
        "!/Searching/.test(document.querySelector('#search-results h2')?.innerText || '');"))
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('#search-results ul.search li a'))"
        ".map(a => a.getAttribute('href'));")
    hits = {Path(urlparse(h).path).stem for h in links}
    assert expected <= hits, f"search for {word!r}: {sorted(hits)} lacks {sorted(expected - hits)}"


def test_a_hidden_solution_opens(server, browser):
    page = next(p for p in PAGES if "03_bn_derivation" in p)
    _open(browser, server + page)
    details = browser.find_elements("css selector", ".tag_solution details.hide.above-input")
    assert details, "no hidden solution cell on the chapter 3 page"
    first = details[0]
    browser.execute_script("arguments[0].scrollIntoView()", first)
    assert not first.get_attribute("open")
    first.find_element("css selector", "summary").click()
    assert first.get_attribute("open") is not None
    code = first.find_element("css selector", ".cell_input")
    assert code.is_displayed() and "def " in code.text
