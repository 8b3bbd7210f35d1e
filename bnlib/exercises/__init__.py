"""Exercise checks: feedback for students' own implementations.

Each chapter's module (``bnlib.exercises.ch03`` and so on) has ``check_*``
functions that call a student's function on seeded inputs, compare it with
bnlib's reference and print one line per check: a pass, or what is wrong (a
shape, which gradient, how large the error).  A function that still raises
``NotImplementedError`` is reported as not done yet instead of failing.

Solutions in the chapters sit between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; ``make_student_notebooks`` (``python -m bnlib student``)
writes copies of the notebooks with those parts replaced by a stub and the
outputs cleared.  ``grade`` runs every check of a chapter and returns the score.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'


class ExerciseError(AssertionError):
    """A student's answer is wrong; the message says what and by how much."""


@dataclass
class Feedback:
    name: str
    passed: bool
    message: str

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "TODO" if self.message.startswith("not implemented") else "FAIL"
        return f"[{mark}] {self.name}: {self.message}"

    def _repr_pretty_(self, p, cycle):  # IPython shows the same one line
        p.text(str(self))


def run_check(name: str, body: Callable[[], str]) -> Feedback:
    """Run one check; ``body`` returns a success message or raises ``ExerciseError``."""
    try:
        return Feedback(name, True, body())
    except NotImplementedError:
        return Feedback(name, False, "not implemented yet - fill in the function and run again")
    except ExerciseError as err:
        return Feedback(name, False, str(err))


CHECK_SEED_ENV = "BNLIB_CHECK_SEED"


def check_rng(salt: int = 0) -> np.random.Generator:
    """The random generator every check draws its inputs from.

    Its seed is ``salt`` mixed with the run's seed: the environment variable
    ``BNLIB_CHECK_SEED`` when set (the grader sets a fresh one per run, so an
    answer cannot be fitted to fixed inputs), otherwise 0, which keeps the
    book's own executed notebooks reproducible.
    """
    import os

    run_seed = int(os.environ.get(CHECK_SEED_ENV, "0"))
    return np.random.default_rng([run_seed, int(salt)])


def expect_shape(what: str, got, expected_shape) -> np.ndarray:
    """Convert ``got`` to an array and check its shape, naming ``what`` if it differs."""
    if got is None:
        raise ExerciseError(f"{what} is None - did you forget a return statement?")
    got = np.asarray(got)
    if got.shape != tuple(expected_shape):
        raise ExerciseError(f"{what} has shape {got.shape}, expected {tuple(expected_shape)}")
    return got


def report(feedback: Feedback) -> Feedback:
    """Print ``feedback`` as its one line and return it (what every ``check_*`` does)."""
    print(feedback)
    return feedback


def expect_scalar(what: str, value) -> float:
    """Convert ``value`` to one finite float, naming ``what`` if it is None, an array or not finite."""
    if value is None:
        raise ExerciseError(f"{what} is None - did you forget a return statement?")
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != ():
        raise ExerciseError(f"{what} should be one number, got an array of shape {arr.shape}")
    if not np.isfinite(arr):
        raise ExerciseError(f"{what} is {float(arr)} (not finite)")
    return float(arr)


def expect_close(what: str, got, expected, tol: float = 1e-7) -> float:
    """Check shape and relative error of ``got`` against ``expected``; return the error."""
    expected = np.asarray(expected, dtype=np.float64)
    got = expect_shape(what, got, expected.shape).astype(np.float64)
    if not np.all(np.isfinite(got)):
        raise ExerciseError(f"{what} contains NaN or inf")
    err = float(np.max(np.abs(got - expected) / np.maximum(1e-8, np.abs(got) + np.abs(expected))))
    if err > tol:
        raise ExerciseError(f"{what} is off: max relative error {err:.2e} (tolerance {tol:.0e})")
    return err


def strip_solutions(source: str) -> str:
    """Replace every BEGIN/END SOLUTION block of a cell's source by an indented stub."""
    pattern = re.compile(rf"^([ \t]*){re.escape(BEGIN)}.*?^[ \t]*{re.escape(END)}[^\n]*$",
                         re.S | re.M)
    return pattern.sub(lambda m: f"{m.group(1)}{STUB}", source)


_FEEDBACK_ASSERT = re.compile(r"^[ \t]*assert\b[^\n]*\.passed\b[^\n]*\n?", re.M)


def student_source(source: str) -> str:
    """A code cell as students get it: solutions stubbed, ``assert ....passed`` lines dropped.

    The reference notebooks assert that every check passes; a student's copy
    must run on past an unfinished exercise, so those assertions are removed.
    """
    return _FEEDBACK_ASSERT.sub("", strip_solutions(source))


def make_student_notebooks(src: str | Path = "chapters", dst: str | Path = "student") -> list[Path]:
    """Write the student version of every notebook in ``src`` to ``dst``.

    Solutions are replaced by stubs, outputs are cleared; the checks stay, so a
    student sees "not implemented yet" until their code is right.
    """
    import nbformat

    src, dst = Path(src), Path(dst)
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks found in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = student_source(cell.source)
                cell.outputs = []
                cell.execution_count = None
        out = dst / path.name
        nbformat.write(nb, out)
        written.append(out)
    return written


_FEEDBACK_LINE = re.compile(r"^\[(PASS|FAIL|TODO)\] .*$", re.M)


def grade(notebook: str | Path, timeout: int = 600) -> tuple[int, int, list[str]]:
    """Execute ``notebook`` top to bottom and count the exercise checks that pass.

    Cells that raise do not stop the run (a student's unfinished work should not
    hide the checks after it).  Returns ``(passed, total, feedback_lines)``.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    lines = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            lines += [match.group(0) for match in _FEEDBACK_LINE.finditer(text)]
    passed = sum(line.startswith("[PASS]") for line in lines)
    return passed, len(lines), lines
