"""``python -m bnlib student`` (``make student``): the student version shows no solution.

Solutions are stubbed, the cells that print a reference solution's source
(``bnlib.show_source(batchnorm_backward)`` in chapter 3 and the like) are gone,
model answers are empty answer cells, and no line of a reference solution's
body appears anywhere in the student notebooks.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import nbformat
import pytest

from bnlib.__main__ import main
from bnlib.exercises import ANSWER_STUB, BEGIN, answer_references, make_student_notebooks, shows_solution

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = REPO / "chapters"


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def _body_lines(obj) -> list[str]:
    """The distinctive lines of a reference's body (no signature, docstring, comments, imports)."""
    obj = getattr(obj, "__bnlib_blocked__", obj)
    lines = inspect.getsource(obj).splitlines()
    doc = (obj.__doc__ or "").strip()
    out = []
    for line in lines[1:]:
        text = line.strip()
        if len(text) < 30 or text.startswith(("#", '"', "'", ")", "from ", "import ")) \
                or text in doc or "default_rng(" in text:
            continue
        out.append(text)
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    dst = tmp_path_factory.mktemp("student")
    make_student_notebooks(CHAPTERS, dst)
    return {p.name: nbformat.read(p, as_version=4) for p in sorted(dst.glob("*.ipynb"))}


def test_every_chapter_has_a_student_version(student):
    assert sorted(student) == sorted(p.name for p in CHAPTERS.glob("*.ipynb"))


@pytest.mark.parametrize("name", sorted(p.name for p in CHAPTERS.glob("*.ipynb")))
def test_student_version_shows_no_solution(student, name):
    original = nbformat.read(CHAPTERS / name, as_version=4)
    nb = student[name]
    references = answer_references(original)
    text = "\n".join(c.source for c in nb.cells)
    assert BEGIN not in text
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert not [c.source for c in nb.cells if shows_solution(c, references)]
    removed = [c for c in original.cells if shows_solution(c, references)]
    assert len(nb.cells) == len(original.cells) - len(removed)
    for ref in sorted(references):
        for line in _body_lines(_resolve(ref)):
            assert line not in text, f"{name}: a line of {ref} is in the student version: {line}"
    answers = [c for c in original.cells if "model-answer" in c.metadata.get("tags", [])]
    emptied = [c for c in nb.cells if "answer" in c.metadata.get("tags", [])]
    assert len(emptied) == len(answers)
    assert all(c.source == ANSWER_STUB for c in emptied)
    assert "Model answer" not in text


def test_chapter_3s_reference_sources_are_removed(student):
    nb = student["03_bn_derivation.ipynb"]
    shown = "\n".join(c.source for c in nb.cells if "show_source" in c.source)
    for name in ("batchnorm_forward)", "batchnorm_backward)", "batchnorm_backward_staged)"):
        assert name not in shown


def test_student_refuses_the_source_folder_however_spelled(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "01_x.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    link = tmp_path / "link"
    link.symlink_to(src)
    before = (src / "01_x.ipynb").read_text()
    for dst in (src, link, tmp_path / "src" / ".." / "src", Path(str(src) + "/")):
        assert main(["student", "--force", str(src), str(dst)]) == 2
        assert "overwrite the solutions" in capsys.readouterr().err
    assert (src / "01_x.ipynb").read_text() == before
