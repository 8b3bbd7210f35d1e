"""book/teaching.md lists exactly the exercises the chapters have (issue 12: no promised
exercise that is missing, no graded check that the list leaves out)."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("0[1-8]_*.ipynb"))


def teaching_rows() -> dict[int, list[str]]:
    text = (ROOT / "book" / "teaching.md").read_text()
    section = text.split("## The exercises, chapter by chapter", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1:]
    return rows


def chapter_cells(path: Path):
    return json.loads(path.read_text())["cells"]


def test_every_chapter_has_a_row():
    assert sorted(teaching_rows()) == list(range(1, 9))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_checks_listed_are_the_checks_the_chapter_grades(path):
    number = int(path.name[:2])
    build, experiment, _ = teaching_rows()[number]
    listed = set(re.findall(r"`(check_\w+)`", build + experiment))
    module = importlib.import_module(f"bnlib.exercises.ch{number:02d}")
    graded = set()
    for cell in chapter_cells(path):
        if cell["cell_type"] == "code" and "feedback.passed" in "".join(cell["source"]):
            graded |= {name for name in re.findall(r"\b(check_\w+)\(", "".join(cell["source"]))
                       if callable(getattr(module, name, None))}
    assert listed == graded, f"teaching.md lists {sorted(listed)}, chapter {number} grades {sorted(graded)}"
    assert experiment and re.search(r"`check_\w+`", experiment), \
        f"chapter {number} needs an experiment or diagnosis exercise with a checked answer"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_written_questions_listed_exist_with_model_answers(path):
    number = int(path.name[:2])
    written = teaching_rows()[number][2]
    listed = set(re.findall(rf"\b{number}\.(\d+)", written))
    cells = chapter_cells(path)
    found = set()
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "written-question" in tags:
            m = re.match(rf"\*\*Exercise {number}\.(\d+)", "".join(cell["source"]))
            assert m, f"a written question in chapter {number} does not start with its number"
            following = cells[i + 1] if i + 1 < len(cells) else {}
            assert "model-answer" in following.get("metadata", {}).get("tags", []), \
                f"exercise {number}.{m.group(1)} has no model answer after it"
            found.add(m.group(1))
    assert listed == found and found, (number, sorted(listed), sorted(found))
