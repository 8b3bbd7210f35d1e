"""Grading a student's notebook against the instructor's (``python -m bnlib grade``).

The instructor's notebook is the authority.  From the submission only the
solution cells are taken (matched to the instructor's by cell id, then by
nbgrader ``grade_id``, then by their order among the solution cells); they
replace the instructor's solution cells, and that notebook runs, top to
bottom, in a fresh process (:mod:`bnlib.exercises.sandbox`).  Everything else
the student changed (check cells edited or deleted, cells added, printed
``[PASS]`` lines) is ignored.

The score is the points of the instructor's check cells (see
:func:`bnlib.exercises.nbgrader.cell_kind`; 1 point each unless the cell says
otherwise) whose check passed.  A check passes when its cell ran without error,
the check functions (restored to the instructor's before the cell) recorded at
least one Feedback and all of them passed, and the student's code did not
replace anything in the check modules, NumPy or the builtins.  A check that did not run (an earlier
crash, ``os._exit``, a timeout) scores 0 and says why.

Isolation: each submission runs in its own process group and temporary working
copy (its current folder and ``HOME``; the instructor's files are never
opened by it), with a minimal environment, a fresh ``BNLIB_CHECK_SEED``, a
memory limit (``RLIMIT_AS`` where there is no NVIDIA device, so that an
allocation fails inside its cell; always a resident-memory watch that kills
the process group), a per-cell timeout (SIGALRM in the
process, then SIGKILL after a grace period) and a per-notebook timeout; when
the grader runs as root the process runs as ``nobody``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bnlib.exercises import strip_solutions
from bnlib.exercises.nbgrader import CHECK, SOLUTION, cell_kind, grade_id, points

GRACE_S = 5.0
DEFAULT_MEMORY_GB = 8.0


class GradingError(Exception):
    """The grading cannot start (no instructor's notebook, unreadable files)."""


@dataclass
class CheckResult:
    exercise: str      # the check's name ("exercise 3.1 batchnorm forward") or its grade_id
    grade_id: str
    points: int
    earned: int
    message: str


@dataclass
class NotebookGrade:
    submission: Path
    instructor: Path
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: int = 0   # written answers, graded by hand

    @property
    def score(self) -> int:
        return sum(c.earned for c in self.checks)

    @property
    def total(self) -> int:
        return sum(c.points for c in self.checks)

    def report(self) -> str:
        lines = [f"{self.submission} (against {self.instructor})"]
        for c in self.checks:
            mark = "PASS" if c.earned else "FAIL"
            lines.append(f"  [{mark}] {c.exercise} ({c.earned}/{c.points}): {c.message}")
        lines += [f"  note: {note}" for note in self.notes]
        if self.written:
            lines.append(f"  {self.written} written answer(s) are graded by hand (not in the score)")
        lines.append(f"score: {self.score}/{self.total}")
        return "\n".join(lines)


def _read(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:   # not JSON, not a notebook
        raise GradingError(f"{path} is not a readable notebook ({type(err).__name__})") from None


def instructor_notebook(submission: Path, source: Path | None) -> Path:
    """The instructor's notebook of the same file name in ``source`` (default ``chapters/``)."""
    if source is None:
        source = Path(__file__).resolve().parents[2] / "chapters"
    path = Path(source) / Path(submission).name
    if not path.is_file():
        raise GradingError(f"no instructor's notebook {path.name} in {source} (pass --source DIR)")
    if path.resolve() == Path(submission).resolve():
        raise GradingError(f"{submission} is the instructor's notebook itself")
    return path


def _solution_cells(nb) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and (
        cell_kind(cell) == SOLUTION or cell.metadata.get("nbgrader", {}).get("solution"))]


def merge(instructor, student) -> tuple[list[dict], list[str]]:
    """The cells to run: the instructor's, with the student's solution cells in place.

    Returns ``(cells, notes)``; each cell is ``{"index", "kind", "source"}``
    with kind ``"code"`` or ``"check"``.  A solution cell the submission lacks
    runs as the instructor's cell with its solution stubbed out.
    """
    by_id = {c.get("id"): c for c in student.cells if c.get("id")}
    by_grade_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in student.cells
                   if c.metadata.get("nbgrader", {}).get("grade_id")}
    ins_solutions = [i for i, c in enumerate(instructor.cells) if cell_kind(c) == SOLUTION]
    stu_solutions = [student.cells[i] for i in _solution_cells(student)]
    by_order = dict(zip(ins_solutions, stu_solutions)) if len(stu_solutions) == len(ins_solutions) \
        else {}
    cells, notes = [], []
    for index, cell in enumerate(instructor.cells):
        if cell.cell_type != "code":
            continue
        kind = cell_kind(cell)
        if kind == SOLUTION:
            theirs = (by_id.get(cell.get("id")) or by_grade_id.get(grade_id(cell, index))
                      or by_order.get(index))
            if theirs is None or theirs.cell_type != "code":
                notes.append(f"solution cell {grade_id(cell, index)} is missing from the "
                             "submission: it ran as a stub")
                source = strip_solutions(cell.source)
            else:
                source = theirs.source
            cells.append({"index": index, "kind": "code", "source": source})
        else:
            cells.append({"index": index, "kind": "check" if kind == CHECK else "code",
                          "source": cell.source})
    return cells, notes


def check_modules(instructor) -> list[str]:
    """The ``bnlib.exercises`` modules the instructor's notebook imports its checks from."""
    import re

    found = set()
    for cell in instructor.cells:
        if cell.cell_type == "code":
            found.update(re.findall(r"\bbnlib\.exercises\.(\w+)", cell.source))
    return sorted(f"bnlib.exercises.{name}" for name in found)


def _environment(workdir: Path, seed: int) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
           "LANG": os.environ.get("LANG", "C.UTF-8"), "MPLBACKEND": "Agg",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "MPLCONFIGDIR": str(workdir / ".mpl"), "BNLIB_CHECK_SEED": str(seed),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    from bnlib.data import mnist_dir

    env["BNLIB_MNIST_DIR"] = str(mnist_dir())
    if os.environ.get("BNLIB_RESULTS"):
        env["BNLIB_RESULTS"] = os.environ["BNLIB_RESULTS"]
    return env


def _limits(memory_bytes: int | None):
    import resource

    def apply():   # in the child, before exec
        if memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _others_can_use(path: Path) -> bool:
    """Can a user who owns nothing here run ``path`` (every folder above it searchable)?"""
    import stat

    path = path.resolve()
    for folder in path.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IXOTH)


def unprivileged_user() -> tuple[tuple[int, int] | None, str | None]:
    """``((uid, gid), None)`` of ``nobody`` when the grader runs as root and ``nobody`` can run
    this Python; else ``(None, why not)``; ``(None, None)`` when the grader is not root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, None
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None, "there is no user nobody: the submission ran as root"
    roots = [Path(sys.executable), Path(os.__file__), Path(__file__)]
    if not all(_others_can_use(p) if p == roots[0] else _others_can_use(p.parent / ".")
               for p in roots):
        return None, ("the user nobody cannot run this Python (a folder above it is private): "
                      "the submission ran as root")
    return (entry.pw_uid, entry.pw_gid), None


class _MemoryWatch:
    """Kills the submission's process group when its resident memory exceeds the limit.

    The address-space limit (RLIMIT_AS) makes an allocation fail inside the
    cell, which lets the notebook go on; it cannot be used with CUDA, so this
    watch, polled while the grader waits, is the limit that always holds.
    """

    def __init__(self, pid: int, limit: int | None):
        self.pid, self.limit, self.exceeded = pid, limit, False

    def check(self) -> bool:
        if not self.limit or self.exceeded:
            return self.exceeded
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
            rss = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return False
        if rss > self.limit:
            self.exceeded = True
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.exceeded


class _Reader:
    """Signed lines from the sandbox's result pipe; forged or garbled lines are dropped."""

    def __init__(self, fd: int, secret: bytes):
        self.fd, self.secret, self.buffer, self.expected, self.closed = fd, secret, b"", 1, False
        self.forged = 0

    def next(self, deadline: float, watch=None) -> dict | None:
        while True:
            if watch is not None and watch.check():
                return None
            if b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                message = self._verify(line)
                if message is not None:
                    return message
                continue
            if self.closed:
                return None
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], min(wait, 0.25))
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    self.closed = True
                self.buffer += chunk
                if len(self.buffer) > 16 * 2**20:   # a flood: keep the tail
                    self.buffer = self.buffer[-2**20:]

    def _verify(self, line: bytes) -> dict | None:
        try:
            outer = json.loads(line)
            payload, mac = outer["payload"], outer["mac"]
            good = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(good, str(mac)):
                raise ValueError
            message = json.loads(payload)
            if message.get("n") != self.expected:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            self.forged += 1
            return None
        self.expected += 1
        return message


def run_cells(cells: list[dict], modules: list[str], workdir: Path, cell_timeout: float,
              notebook_timeout: float, memory_gb: float | None = DEFAULT_MEMORY_GB,
              seed: int | None = None, address_limit: bool | None = None
              ) -> tuple[dict[int, dict], str | None, list[str]]:
    """Run ``cells`` in a sandbox process.

    Returns ``({cell index: done message}, why it stopped early or None, notes)``.
    """
    secret = secrets.token_bytes(32)
    seed = secrets.randbelow(2**31) if seed is None else seed
    read_fd, write_fd = os.pipe()
    log = open(workdir / "output.log", "wb")
    user, why_not = unprivileged_user()
    if user is not None:
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, *user)
    kwargs = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
    memory = int(memory_gb * 2**30) if memory_gb else None
    if address_limit is None:   # CUDA reserves far more address space than any sane limit
        address_limit = not any(Path("/dev").glob("nvidia*"))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bnlib.exercises.sandbox", str(write_fd)],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            env=_environment(workdir, seed), pass_fds=(write_fd,), start_new_session=True,
            preexec_fn=_limits(memory if address_limit else None), **kwargs)
    finally:
        os.close(write_fd)
        log.close()
    done: dict[int, dict] = {}
    stopped = None
    reader = _Reader(read_fd, secret)
    watch = _MemoryWatch(proc.pid, memory)
    try:
        job = {"secret": secret.hex(), "cells": cells, "check_modules": modules,
               "cell_timeout": cell_timeout}
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        end = time.monotonic() + notebook_timeout
        current = None
        while True:
            deadline = min(end, time.monotonic() + (cell_timeout + GRACE_S if current is not None
                                                    else 120.0))
            message = reader.next(deadline, watch=watch)
            if message is None:
                if watch.exceeded:
                    stopped = (f"the notebook stopped in cell {current}: it used more than "
                               f"{memory_gb:g} GiB of memory and was killed")
                elif reader.closed:
                    code = proc.wait(timeout=30)
                    what = f"cell {current}" if current is not None else "start-up"
                    stopped = (f"the notebook stopped in {what}: the process exited "
                               f"(status {code})" if code >= 0 else
                               f"the notebook stopped in {what}: the process was killed by "
                               f"signal {-code} (a crash or the memory limit)")
                elif time.monotonic() >= end:
                    stopped = (f"the notebook ran past its timeout of {notebook_timeout:g} s "
                               f"(in cell {current})")
                else:
                    stopped = (f"cell {current} ran past the per-cell timeout of {cell_timeout:g} s "
                               "and did not stop")
                break
            if message["event"] == "start":
                current = message["cell"]
            elif message["event"] == "done":
                done[message["cell"]] = message
                current = None
            elif message["event"] == "end":
                break
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        os.close(read_fd)
    notes = [why_not] if why_not else []
    if reader.forged:
        notes.append(f"{reader.forged} line(s) on the result pipe were not the grader's "
                     "and were ignored")
    return done, stopped, notes


def grade_notebook(submission: str | Path, source: str | Path | None = None, timeout: float = 600,
                   notebook_timeout: float | None = None, memory_gb: float | None = DEFAULT_MEMORY_GB,
                   seed: int | None = None, address_limit: bool | None = None) -> NotebookGrade:
    """Grade one submitted notebook against the instructor's of the same name."""
    submission = Path(submission)
    if not submission.is_file():
        raise GradingError(f"no such notebook: {submission}")
    student = _read(submission)
    instructor_path = instructor_notebook(submission, Path(source) if source else None)
    instructor = _read(instructor_path)
    cells, notes = merge(instructor, student)
    result = NotebookGrade(submission, instructor_path, notes=notes)
    result.written = sum(cell_kind(c) == "answer" for c in instructor.cells)
    notebook_timeout = notebook_timeout or max(3600.0, 4 * timeout)
    workdir = Path(tempfile.mkdtemp(prefix="bnlib-grade-"))
    try:
        done, stopped, run_notes = run_cells(cells, check_modules(instructor), workdir, timeout,
                                             notebook_timeout, memory_gb, seed, address_limit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.notes += ([stopped] if stopped else []) + run_notes
    for cell in cells:   # the student's own cells that failed: worth saying why
        ins = instructor.cells[cell["index"]]
        error = (done.get(cell["index"]) or {}).get("error")
        if error and cell_kind(ins) == SOLUTION:
            result.notes.append(f"solution cell {grade_id(ins, cell['index'])} failed: {error}")
    for cell in cells:
        if cell["kind"] != "check":
            continue
        index = cell["index"]
        ins = instructor.cells[index]
        gid, worth = grade_id(ins, index), points(ins)
        message = done.get(index)
        names = [fb["name"] for fb in (message or {}).get("feedback", [])]
        if names:
            exercise = names[0]
        else:   # the check did not report: name it by the check it calls
            import re

            called = re.findall(r"\b(check_\w+)\s*\(", ins.source)
            exercise = f"{called[0]} (cell {gid})" if called else f"cell {gid}"
        if message is None:
            why = stopped or "the notebook stopped before it"
            result.checks.append(CheckResult(exercise, gid, worth, 0, f"did not run: {why}"))
            continue
        feedback = message.get("feedback") or []
        failed = [fb for fb in feedback if not fb["passed"]]
        if message.get("tampered"):
            earned, text = 0, (f"your code replaced {message['tampered']} while the check ran; "
                               "the check does not count")
        elif failed:
            earned, text = 0, "; ".join(fb["message"] for fb in failed)
        elif not feedback:
            earned, text = 0, ("the check did not report a result"
                               + (f" ({message['error']})" if message.get("error") else ""))
        elif message.get("error"):
            earned, text = 0, f"the check cell failed: {message['error']}"
        else:
            earned, text = worth, "; ".join(fb["message"] for fb in feedback)
        result.checks.append(CheckResult(exercise, gid, worth, earned, text))
    return result


def grade_folder(folder: str | Path, source: str | Path | None = None, out: str | Path | None = None,
                 **options) -> tuple[list[tuple[str, NotebookGrade | str]], Path]:
    """Grade ``folder/STUDENT/*.ipynb`` for every student; write ``grades.csv`` and feedback files.

    ``out`` (default ``folder``) receives ``grades.csv`` (student, notebook,
    exercise, points, max_points, message) and ``feedback/STUDENT.txt``.
    """
    import csv

    folder = Path(folder)
    out = Path(out) if out else folder
    students = sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "feedback"
                      and not p.name.startswith("."))
    if not any(any(s.glob("*.ipynb")) for s in students):
        raise GradingError(f"{folder} has no student folders with notebooks "
                           "(FOLDER/STUDENT/NN_chapter.ipynb)")
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    graded = []
    with open(out / "grades.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "notebook", "exercise", "points", "max_points", "message"])
        for student in students:
            reports = []
            for notebook in sorted(student.glob("*.ipynb")):
                try:
                    grade = grade_notebook(notebook, source, **options)
                except GradingError as err:
                    writer.writerow([student.name, notebook.name, "", 0, 0, str(err)])
                    reports.append(f"{notebook}: {err}")
                    graded.append((student.name, str(err)))
                    continue
                for c in grade.checks:
                    writer.writerow([student.name, notebook.name, c.exercise, c.earned, c.points,
                                     c.message])
                reports.append(grade.report())
                graded.append((student.name, grade))
            if not reports:
                reports.append(f"no notebooks in {student}")
            (out / "feedback" / f"{student.name}.txt").write_text("\n\n".join(reports) + "\n")
    return graded, out / "grades.csv"
