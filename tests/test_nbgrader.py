"""nbgrader interoperability: the chapters carry nbgrader's cell metadata, and nbgrader's own
``generate_assignment`` and ``autograde`` run on them (offline, in a temporary course folder).

``python -m bnlib tag chapters`` writes the metadata; the first test fails until it has been run
after the last change to a chapter's cells.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bnlib.exercises.nbgrader import ANSWER, CHECK, SOLUTION, cell_kind, is_tagged, tag_notebook

from test_grader import STUB_BACKWARD, STUB_FORWARD, instructor, submission

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "chapters").glob("*.ipynb"))
#: the chapter nbgrader autogrades in full (the quickest one that has exercises)
REAL_CHAPTER = REPO / "chapters" / "05_eval_mode.ipynb"


def test_every_chapter_is_tagged_up_to_date():
    stale = [p.name for p in CHAPTERS if not is_tagged(nbformat.read(p, as_version=4))]
    assert not stale, f"run: python -m bnlib tag chapters   (not up to date: {stale})"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_tagging_is_idempotent_and_valid_for_nbgrader(path, tmp_path):
    from nbgrader.nbgraderformat.v3 import MetadataValidatorV3

    nb = tag_notebook(nbformat.read(path, as_version=4))
    written = tmp_path / path.name
    nbformat.write(nb, written)
    again = nbformat.read(written, as_version=4)
    assert is_tagged(again)
    assert tag_notebook(copy.deepcopy(again)) == again   # a second run changes nothing
    MetadataValidatorV3().validate_nb(again)
    ids = [c.metadata.nbgrader["grade_id"] for c in again.cells]
    assert len(set(ids)) == len(ids) and ids == [c.id for c in again.cells]
    kinds = [cell_kind(c) for c in again.cells]
    assert kinds.count(SOLUTION) >= 1 and kinds.count(CHECK) >= 1
    for cell, kind in zip(again.cells, kinds):
        meta = cell.metadata.nbgrader
        assert meta["schema_version"] == 3
        if kind == CHECK:
            assert meta["grade"] and meta["locked"] and not meta["solution"] and meta["points"] >= 1
        elif kind in (SOLUTION, ANSWER):
            assert meta["solution"] and not meta["locked"]
        else:
            assert meta["locked"] and not meta["grade"] and not meta["solution"]


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}",
                           "--CourseDirectory.course_id=bnbook", "--ExecutePreprocessor.timeout=600"],
                          cwd=course, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _course(tmp_path: Path, nb, name: str) -> Path:
    course = tmp_path / "course"
    (course / "source" / "ps").mkdir(parents=True)
    nbformat.write(tag_notebook(nb), course / "source" / "ps" / name)
    _nbgrader(course, "generate_assignment", "ps", "--force")
    return course


def _submit(course: Path, student: str, nb_path: Path, name: str) -> None:
    folder = course / "submitted" / student / "ps"
    folder.mkdir(parents=True)
    shutil.copy(nb_path, folder / name)


def _scores(course: Path) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.student_id: (s.code_score, s.max_code_score)
                for s in gb.assignment_submissions("ps")}


def test_nbgrader_generate_assignment_and_autograde(tmp_path):
    """The small chapter-3 notebook of test_grader: reference 2/2, stubs 0/2, edited checks 1/2."""
    name = "03_tiny.ipynb"
    course = _course(tmp_path, instructor(), name)
    released = nbformat.read(course / "release" / "ps" / name, as_version=4)
    text = nbformat.writes(released)
    assert "BEGIN SOLUTION" not in text and "Model answer" not in text and "YOUR ANSWER HERE" in text
    _submit(course, "reference", course / "source" / "ps" / name, name)
    _submit(course, "handout", course / "release" / "ps" / name, name)
    edited = tmp_path / name   # the forward pass right, the checks rewritten to pass: nbgrader restores them
    nb = tag_notebook(submission(None, STUB_BACKWARD))   # students start from the release
    nb.cells[4].source = "print('[PASS]')"
    nbformat.write(nb, edited)
    _submit(course, "edited_checks", edited, name)
    _nbgrader(course, "autograde", "ps", "--create", "--force")
    scores = _scores(course)
    assert scores == {"reference": (2.0, 2.0), "handout": (0.0, 2.0), "edited_checks": (1.0, 2.0)}


def test_nbgrader_autogrades_a_real_chapter(tmp_path):
    """One chapter through nbgrader: the released version has no solutions, the reference
    solutions get every autograded point."""
    name = REAL_CHAPTER.name
    course = _course(tmp_path, nbformat.read(REAL_CHAPTER, as_version=4), name)
    text = (course / "release" / "ps" / name).read_text()
    assert "BEGIN SOLUTION" not in text
    _submit(course, "reference", course / "source" / "ps" / name, name)
    _nbgrader(course, "autograde", "ps", "--create", "--force")
    (score, total), = _scores(course).values()
    assert total >= 3 and score == total
