"""Exercise checks: feedback for students' own implementations.

Each chapter's module (``bnlib.exercises.ch03`` and so on) has ``check_*``
functions that call a student's function on inputs drawn from
:func:`check_rng`, compare it with bnlib's reference and print one line of
feedback: a pass, or what is wrong (a shape, which gradient, how large the
error).  A function that still raises ``NotImplementedError`` is reported as
not done yet instead of failing.

While a check runs, bnlib's reference implementations of what the student is
asked to write are unavailable to the student's code (``run_check(...,
blocks=...)``, plus every ``*_reference`` function of the check's module):
calling one fails the check with a message saying so.

Solutions in the chapters sit between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; ``make_student_notebooks`` (``python -m bnlib student``)
writes copies of the notebooks with those parts replaced by a stub, the
outputs cleared, the cells that show a reference solution's source removed
and the model answers of written questions replaced by an empty answer cell.
``grade`` (:mod:`bnlib.exercises.grading`) grades a student's notebook
against the instructor's; :mod:`bnlib.exercises.nbgrader` writes nbgrader's
cell metadata.
"""
from __future__ import annotations

import re
import sys
from contextlib import contextmanager
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


class ReferenceBlocked(ExerciseError):
    """A student's function called a reference implementation the check has made unavailable."""


#: Set by the grader (bnlib.exercises.sandbox) in a freshly imported copy of this module:
#: called with every Feedback ``run_check`` returns.  None in a notebook.
_RECORDER: Callable[[Feedback], None] | None = None


def run_check(name: str, body: Callable[[], str], blocks: tuple[str, ...] = ()) -> Feedback:
    """Run one check; ``body`` returns a success message or raises ``ExerciseError``.

    ``blocks`` names the reference implementations a student must not call
    (``"module:qualname"``, e.g. ``"bnlib.scratch.functional:batchnorm_forward"``);
    together with every ``*_reference`` function of the calling check module
    they are unavailable to code outside ``bnlib.exercises`` while ``body``
    runs (see :func:`blocked_references`).
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")
    try:
        with blocked_references(blocks, check_module=caller):
            feedback = Feedback(name, True, body())
    except NotImplementedError:
        feedback = Feedback(name, False, "not implemented yet - fill in the function and run again")
    except ExerciseError as err:
        feedback = Feedback(name, False, str(err))
    if _RECORDER is not None:
        _RECORDER(feedback)
    return feedback


# --- references made unavailable while a check runs -----------------------------------

_EXERCISES_DIR = Path(__file__).resolve().parent


def resolve_reference(spec: str):
    """``"pkg.module:Qual.name"`` -> ``(owner, attribute, object)``; the module is imported."""
    import importlib

    module_name, _, qualname = spec.partition(":")
    owner = importlib.import_module(module_name)
    parts = qualname.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    return owner, parts[-1], getattr(owner, parts[-1])


_TESTS_DIR = _EXERCISES_DIR.parent.parent / "tests"


def _trusted(frame) -> bool:
    """Is ``frame`` code of a check module (which computes the expected answers), or of the
    repository's tests (which build wrong answers from the references)?"""
    name = frame.f_globals.get("__name__", "")
    try:
        folder = Path(frame.f_code.co_filename).resolve().parent
    except (OSError, ValueError):
        return False
    if name == "bnlib.exercises" or name.startswith("bnlib.exercises."):
        return folder == _EXERCISES_DIR
    return folder == _TESTS_DIR and "__main__" not in name


def _raiser(ref, label: str):
    import functools

    @functools.wraps(ref)
    def blocked(*args, **kwargs):
        if _trusted(sys._getframe(1)):
            return ref(*args, **kwargs)
        raise ReferenceBlocked(f"your code called bnlib's reference {label}, which is unavailable "
                               "while this check runs: write it yourself")
    blocked.__bnlib_blocked__ = ref
    return blocked


def references_of(blocks: tuple[str, ...] = (), check_module: str | None = None) -> dict[str, object]:
    """The objects ``run_check(..., blocks)`` makes unavailable, keyed by their label."""
    refs: dict[str, object] = {}
    for spec in blocks:
        refs[spec.replace(":", ".")] = resolve_reference(spec)[2]
    module = sys.modules.get(check_module or "")
    if module is not None and check_module != __name__:
        for attr, value in vars(module).items():
            if attr.endswith("_reference") and callable(value):
                refs.setdefault(f"{check_module}.{attr}", value)
    return refs


def _code_key(fn):
    """What a copy of ``fn``'s source compiles to (line numbers aside), or None.

    Only a function with a docstring has a key: an answer written
    independently can compile to the same code as a short reference, but it
    does not carry the reference's docstring.
    """
    code = getattr(fn, "__code__", fn)
    if not hasattr(code, "co_consts") or not isinstance(getattr(fn, "__doc__", None), str):
        return None

    def key(code):
        consts = tuple(key(c) if hasattr(c, "co_consts") else c for c in code.co_consts)
        return (code.co_argcount, code.co_varnames, code.co_names, consts)
    return key(code)


@contextmanager
def blocked_references(blocks: tuple[str, ...] = (), check_module: str | None = None):
    """Replace the references by a function that raises :class:`ReferenceBlocked`.

    Every binding of each reference in every imported module (the student's
    namespace ``__main__`` included), the defaults and closures of the
    student's functions, and the class attribute of a method are swapped for
    the duration; calls coming from a check module itself still reach the
    reference.  A student's function whose code is a copy of a reference's is
    rejected as well.
    """
    refs = references_of(blocks, check_module)
    if not refs:
        yield
        return
    by_id = {id(ref): (label, ref, _raiser(ref, label)) for label, ref in refs.items()}
    codes = {_code_key(ref): label for label, ref in refs.items() if _code_key(ref) is not None}
    undo = []
    try:
        for spec in blocks:
            owner, attr, ref = resolve_reference(spec)
            if isinstance(owner, type):
                undo.append((setattr, owner, attr, ref))
                setattr(owner, attr, by_id[id(ref)][2])
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attr, value in list(namespace.items()):
                if id(value) in by_id and value is by_id[id(value)][1]:
                    undo.append((namespace.__setitem__, attr, value))
                    namespace[attr] = by_id[id(value)][2]
        main = sys.modules.get("__main__")
        for value in list(getattr(main, "__dict__", {}).values()):
            fn = getattr(value, "__func__", value)
            if not callable(fn) or not hasattr(fn, "__code__") or hasattr(fn, "__bnlib_blocked__"):
                continue   # not a function, or one of the raisers just installed
            if fn not in refs.values() and _code_key(fn) in codes:
                raise ReferenceBlocked(f"{getattr(fn, '__name__', 'a function')} is a copy of bnlib's "
                                       f"reference {codes[_code_key(fn)]}: write it yourself")
            for cell in fn.__closure__ or ():
                try:
                    content = cell.cell_contents
                except ValueError:
                    continue
                if id(content) in by_id and content is by_id[id(content)][1]:
                    undo.append((setattr, cell, "cell_contents", content))
                    cell.cell_contents = by_id[id(content)][2]
            if fn.__defaults__ and any(id(d) in by_id for d in fn.__defaults__):
                undo.append((setattr, fn, "__defaults__", fn.__defaults__))
                fn.__defaults__ = tuple(by_id[id(d)][2] if id(d) in by_id else d
                                        for d in fn.__defaults__)
        yield
    finally:
        for action, *args in reversed(undo):
            action(*args)


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


_SHOW_SOURCE = re.compile(r"\b(?:show_source|getsource)\(\s*([\w.]+)")
_BLOCKS_ARG = re.compile(r"blocks=\(([^)]*)\)", re.S)
ANSWER_STUB = "**Your answer:**\n\n"


def answer_references(nb) -> set[str]:
    """Qualified names of the reference solutions of the exercises ``nb`` checks.

    Read from the source of the check modules the notebook imports
    (``bnlib.exercises.chNN``): every ``"module:qualname"`` in a
    ``run_check(..., blocks=(...))`` and every ``*_reference`` function.
    """
    found = set()
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in sorted(set(re.findall(r"\bbnlib\.exercises\.(\w+)", code))):
        path = _EXERCISES_DIR / f"{name}.py"
        if not path.is_file():
            continue
        text = path.read_text()
        for group in _BLOCKS_ARG.findall(text):
            found.update(spec.replace(":", ".") for spec in re.findall(r"[\"']([\w.:]+)[\"']", group))
        found.update(f"bnlib.exercises.{name}.{fn}"
                     for fn in re.findall(r"^def (\w+_reference)\(", text, re.M))
    return found


def shows_solution(cell, references: set[str]) -> bool:
    """Does ``cell`` print the source of one of ``references`` (or is it tagged ``shows-solution``)?"""
    if "shows-solution" in cell.get("metadata", {}).get("tags", []):
        return True
    if cell.cell_type != "code":
        return False
    for expr in _SHOW_SOURCE.findall(cell.source):
        parts = expr.split(".")
        for ref in references:
            ref_parts = ref.split(".")
            # the shown name ends like the reference: a method "GhostBatchNorm.forward",
            # a function "batchnorm_forward" (imported or through its module)
            n = 2 if len(parts) >= 2 and parts[-2][:1].isupper() else 1
            if parts[-n:] == ref_parts[-n:]:
                return True
    return False


def make_student_notebooks(src: str | Path = "chapters", dst: str | Path = "student") -> list[Path]:
    """Write the student version of every notebook in ``src`` to ``dst``.

    Solutions are replaced by stubs, outputs are cleared, the cells that show
    the source of an exercise's reference solution (:func:`shows_solution`)
    are removed, and each model answer (a markdown cell tagged
    ``model-answer``) becomes an empty answer cell tagged ``answer``.  The
    checks stay, so a student sees "not implemented yet" until their code is
    right.
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
        references = answer_references(nb)
        cells = []
        for cell in nb.cells:
            if shows_solution(cell, references):
                continue
            if cell.cell_type == "code":
                cell.source = student_source(cell.source)
                cell.outputs = []
                cell.execution_count = None
            elif "model-answer" in cell.metadata.get("tags", []):
                cell.source = ANSWER_STUB
                cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != "model-answer"] + ["answer"]
            cells.append(cell)
        nb.cells = cells
        out = dst / path.name
        nbformat.write(nb, out)
        written.append(out)
    return written


def grade(notebook: str | Path, source: str | Path | None = None, timeout: float = 600, **options):
    """Grade ``notebook`` against the instructor's notebook of the same name in ``source``.

    See :func:`bnlib.exercises.grading.grade_notebook`; returns its
    :class:`~bnlib.exercises.grading.NotebookGrade` (``.score``, ``.total``, ``.checks``).
    """
    from bnlib.exercises.grading import grade_notebook

    return grade_notebook(notebook, source, timeout=timeout, **options)
