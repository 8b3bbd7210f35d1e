"""bnlib.audit: numbers in prose must be glued, maths, cited, set-up or names."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bnlib import audit
from bnlib.__main__ import main

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
PLANTED = "The network reaches 97.3% test accuracy after 3 epochs."


def numbers(text):
    return [n for n, _ in audit.audit_markdown(text)]


def test_the_planted_sentence_is_reported():
    assert numbers(PLANTED) == ["97.3%"]


@pytest.mark.parametrize("text", [
    "The network reaches {glue:text}`acc:.1%` test accuracy.",            # glued
    "The loss is $0.25$ and $$x = 1.5$$ holds.",                           # maths
    "Call `momentum=0.1` here.",                                           # code
    "Ioffe and Szegedy report 4.9% top-5 error {cite}`ioffe2015batch`.",   # cited
    "Seed 003 reports 94% after the first epoch.",                        # a source article
    "We train with learning rate 0.01 and momentum 0.9 for 3 epochs.",     # set-up
    "It counts the steps to 90% test accuracy.",                           # a target
    "The bars show the 95% interval over seeds.",                          # a level
    "See section 4.8, Figure 1 and exercise 8.1 (appendix C.2.3).",        # names
    "## 5.8 Results at paper scale",                                       # a heading number
    "Pinned to torch==2.13.0 and Python 3.11.",                            # versions
    "The grid has 64 programs for 784-100-10 nets on 4,000 digits.",       # integers
])
def test_accounted_numbers_pass(text):
    assert numbers(text) == []


@pytest.mark.parametrize("text, expected", [
    ("It is 7.6x faster than eager.", ["7.6x"]),
    ("The spread grows x10.8 in seven layers.", ["x10.8"]),
    ("The error is 0.18, about 30 percent.", ["0.18", "30 percent"]),
    ("| `batch-size` | 35.5 / 8.2 | 161 s |", ["35.5", "8.2"]),
    ("```{note}\nThe ratio was 1.23.\n```", ["1.23"]),
])
def test_unaccounted_numbers_are_reported(text, expected):
    assert numbers(text) == expected


def test_a_citation_covers_only_its_own_sentence():
    text = "Wu and He report 23.6% {cite}`wu2018group`. We measure 24.1%."
    assert numbers(text) == ["24.1%"]


def test_planted_sentence_in_a_copy_of_a_chapter_fails_the_audit(tmp_path, capsys):
    src = CHAPTERS / "05_eval_mode.ipynb"
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    assert main(["audit", str(dst)]) == 0, capsys.readouterr().out   # the landed chapter is clean
    nb = json.loads(dst.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    cell["source"] = "".join(cell["source"]) + "\n\n" + PLANTED + "\n"
    dst.write_text(json.dumps(nb))
    capsys.readouterr()
    assert main(["audit", str(dst)]) == 1
    out = capsys.readouterr().out
    assert "97.3%" in out and dst.name in out and "cell 0" in out


def test_every_chapter_passes_the_audit(capsys):
    assert main(["audit", str(CHAPTERS)]) == 0, capsys.readouterr().out


def test_audit_of_a_missing_path_is_a_clear_error(capsys):
    assert main(["audit", "no/such/dir"]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_a_glue_reference_with_no_glued_value_is_reported(tmp_path):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": 1, "source": "",
         "outputs": [{"output_type": "display_data", "data": {},
                      "metadata": {"scrapbook": {"name": "acc", "mime_prefix": ""}}}]},
        {"cell_type": "markdown", "id": "b", "metadata": {},
         "source": "Accuracy {glue:text}`acc:.1%`, loss {glue:text}`loss:.2f`."}]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    found = audit.audit_notebook(path)
    assert [f.number for f in found] == ["glue:loss"]


def test_markdown_pages_are_audited(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n" + PLANTED + "\n")
    assert main(["audit", str(tmp_path)]) == 1
    assert "97.3%" in capsys.readouterr().out
    book = Path(__file__).resolve().parent.parent / "book"
    assert main(["audit", str(book)]) == 0
