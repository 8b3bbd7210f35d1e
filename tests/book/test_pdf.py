"""The PDF of the whole book (``make pdf``): every chapter, in order, with its maths typeset.

Run by ``make test-pdf`` after ``make pdf``; skipped with a reason when the PDF
was not built (no Chromium) or ``pdftotext`` is missing.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PDF = ROOT / "_build" / "pdf" / "book.pdf"


def _chapter_titles() -> list[str]:
    titles = []
    for nb in sorted((ROOT / "chapters").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        first = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
        titles.append(re.match(r"#\s+(.*)", first.strip()).group(1).strip())
    return titles


@pytest.fixture(scope="module")
def pages() -> list[str]:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is missing (apt-get install poppler-utils)")
    if not PDF.is_file():
        pytest.skip(f"{PDF} was not built: run 'make pdf' (needs Chromium)")
    text = subprocess.run(["pdftotext", "-layout", str(PDF), "-"], capture_output=True,
                          text=True, check=True).stdout
    return text.split("\f")


def _normal(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def test_every_chapter_title_is_in_the_pdf_in_order(pages):
    titles = _chapter_titles()
    assert len(titles) == 8
    flat = [_normal(p) for p in pages]
    first_pages = []
    for title in titles:
        hits = [i for i, p in enumerate(flat) if _normal(title) in p]
        assert hits, f"chapter title {title!r} is not in the PDF"
        first_pages.append(next(i for i in hits if not first_pages or i > first_pages[-1]))
    # each chapter starts on a later page than the one before: at least a page per chapter
    assert first_pages == sorted(set(first_pages)), first_pages
    assert len(pages) > 8 * 5


def test_the_maths_is_typeset(pages):
    text = "\n".join(pages)
    assert "\\frac" not in text and "$$" not in text and "\\hat" not in text
