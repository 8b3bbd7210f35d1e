"""nbgrader's cell metadata for the chapters, derived from the exercise conventions.

``python -m bnlib tag chapters`` (``tag_notebook``) writes ``metadata.nbgrader``
(schema version 3) on every cell of a notebook from what the cell is:

* a code cell tagged ``solution`` or holding ``### BEGIN SOLUTION``: an
  autograded answer cell, ``{"solution": true, "grade": false, "locked": false}``;
* a check cell, one that calls a ``check_*`` function and asserts
  ``feedback.passed``: an autograder test, ``{"grade": true, "solution": false,
  "locked": true, "points": N}``;
* a markdown cell tagged ``model-answer`` (the answer to the ``written-question``
  cell before it; ``answer`` in the student version, where it is empty): a manually graded answer, ``{"solution": true, "grade": true,
  "locked": false, "points": N}``, whose text nbgrader's ``generate_assignment``
  replaces by "YOUR ANSWER HERE";
* every other cell: read-only, ``{"locked": true, "solution": false, "grade": false}``.

``N`` is 1 unless the cell's metadata says ``{"bnlib": {"points": N}}``.  The
``grade_id`` of a cell is its cell id, so it stays the same when cells move or
the notebook is tagged again; tagging is idempotent.  bnlib's own grader
(:mod:`bnlib.exercises.grading`) uses the same classification, so one notebook
serves both.
"""
from __future__ import annotations

import re
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
SCHEMA_VERSION = 3

_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")
_PASSED_ASSERT = re.compile(r"^[ \t]*assert\b[^\n]*\.passed\b", re.M)

SOLUTION, CHECK, ANSWER, QUESTION, LOCKED = "solution", "check", "answer", "question", "locked"


def cell_kind(cell) -> str:
    """``"solution"``, ``"check"``, ``"answer"`` (a model answer), ``"question"`` or ``"locked"``."""
    tags = cell.get("metadata", {}).get("tags", [])
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(source)
    if cell.get("cell_type") == "code":
        if "solution" in tags or BEGIN in source:
            return SOLUTION
        if _CHECK_CALL.search(source) and _PASSED_ASSERT.search(source):
            return CHECK
    elif cell.get("cell_type") == "markdown":
        if "model-answer" in tags or "answer" in tags:
            return ANSWER
        if "written-question" in tags:
            return QUESTION
    return LOCKED


def points(cell) -> int:
    """The points a check or written answer is worth: ``metadata.bnlib.points``, else 1."""
    return int(cell.get("metadata", {}).get("bnlib", {}).get("points", 1))


def grade_id(cell, index: int) -> str:
    """The cell's id (stable), or ``cell-INDEX`` for a notebook without cell ids."""
    return str(cell.get("id") or f"cell-{index}")


def nbgrader_metadata(cell, index: int) -> dict:
    """The ``metadata.nbgrader`` that :func:`cell_kind` implies for ``cell``."""
    kind = cell_kind(cell)
    meta = {"grade": False, "grade_id": grade_id(cell, index), "locked": True,
            "schema_version": SCHEMA_VERSION, "solution": False}
    if kind == SOLUTION:
        meta.update(locked=False, solution=True)
    elif kind == CHECK:
        meta.update(grade=True, points=points(cell))
    elif kind == ANSWER:
        meta.update(grade=True, locked=False, solution=True, points=points(cell))
    return meta


def tag_notebook(nb):
    """Set every cell's ``metadata.nbgrader``; returns ``nb`` (changed in place)."""
    for index, cell in enumerate(nb.cells):
        cell.metadata["nbgrader"] = nbgrader_metadata(cell, index)
    return nb


def is_tagged(nb) -> bool:
    """Does every cell carry the metadata :func:`tag_notebook` would write?"""
    return all(cell.get("metadata", {}).get("nbgrader") == nbgrader_metadata(cell, index)
               for index, cell in enumerate(nb.cells))


def notebook_paths(paths) -> list[Path]:
    """The notebooks named by ``paths`` (folders: their ``*.ipynb``, sorted)."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(p.glob("*.ipynb"))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such notebook or folder: {p}")
    return found


def tag_files(paths, check: bool = False) -> list[Path]:
    """Tag each notebook in ``paths`` (files or folders) in place.

    Returns the notebooks that were (with ``check``: would be) changed; a
    notebook already tagged is not rewritten.
    """
    import nbformat

    changed = []
    for path in notebook_paths(paths):
        nb = nbformat.read(path, as_version=4)
        if is_tagged(nb):
            continue
        changed.append(Path(path))
        if not check:
            nbformat.write(tag_notebook(nb), path)
    return changed
