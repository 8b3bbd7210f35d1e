"""The grader against students who want marks without the work (issue 12).

One small instructor's notebook (chapter 3's two batch-norm exercises, two
checks worth one point each) and one submission per attack, graded in one
batch by the command line (``python -m bnlib grade FOLDER --source ...``):
each attack gets the score it deserves, the batch goes on after an infinite
loop and an ``os._exit``, and nothing prints a traceback.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bnlib.exercises import BEGIN, END, make_student_notebooks

REPO = Path(__file__).resolve().parent.parent
NAME = "03_tiny.ipynb"

IMPORTS = ("import numpy as np\nimport bnlib\n"
           "from bnlib.scratch.functional import batchnorm_backward, batchnorm_forward\n"
           "from bnlib.exercises.ch03 import check_batchnorm_backward, check_batchnorm_forward")
FORWARD = f"""def my_batchnorm_forward(x, gamma, beta, eps=1e-5):
    {BEGIN}
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std, gamma)
    {END}
"""
BACKWARD = f"""def my_batchnorm_backward(dy, cache):
    {BEGIN}
    x_hat, inv_std, gamma = cache
    m = dy.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta
    {END}
"""
CHECK_FORWARD = ("feedback = check_batchnorm_forward(my_batchnorm_forward)\n"
                 "assert feedback.passed, feedback.message")
CHECK_BACKWARD = ("feedback = check_batchnorm_backward(my_batchnorm_forward, my_batchnorm_backward)\n"
                  "assert feedback.passed, feedback.message")
STUB_FORWARD = "def my_batchnorm_forward(x, gamma, beta, eps=1e-5):\n    raise NotImplementedError\n"
STUB_BACKWARD = "def my_batchnorm_backward(dy, cache):\n    raise NotImplementedError\n"


def instructor() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "bnlib", "display_name": "Python (bnlib)",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(IMPORTS),
        nbformat.v4.new_code_cell(FORWARD, metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell(CHECK_FORWARD),
        nbformat.v4.new_code_cell(BACKWARD, metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell(CHECK_BACKWARD),
        nbformat.v4.new_markdown_cell("Why does BN need eps?", metadata={"tags": ["written-question"]}),
        nbformat.v4.new_markdown_cell(":::{admonition} Model answer\n:class: dropdown\n"
                                      "So that a feature with zero variance does not divide by zero.\n:::",
                                      metadata={"tags": ["model-answer"]}),
    ]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell{i}"
    return nb


def submission(forward=None, backward=None, edit=None) -> nbformat.NotebookNode:
    """The instructor's notebook with the two solution cells' sources replaced."""
    nb = instructor()
    if forward is not None:
        nb.cells[1].source = forward
    if backward is not None:
        nb.cells[3].source = backward
    if edit is not None:
        edit(nb)
    return nb


def _delete_checks(nb):
    nb.cells = [c for c in nb.cells if "check_" not in c.source or "import" in c.source]


def _edit_checks(nb):
    for i in (2, 4):
        nb.cells[i].source = ("from bnlib.exercises import Feedback\n"
                              "feedback = Feedback('exercise 3.1 batchnorm forward', True, 'ok')\n"
                              "print(feedback)")


def _spoof(nb):
    for i in (2, 4):
        nb.cells[i].source = "print('[PASS] exercise 3.1 batchnorm forward: y matches')"
    nb.cells.insert(1, nbformat.v4.new_code_cell("print('[PASS] exercise 3.1 batchnorm forward')"))


SPOOF = STUB_FORWARD + """
import os, json
line = json.dumps({"payload": json.dumps({"event": "done", "cell": 2, "n": 2, "feedback":
                   [{"name": "x", "passed": True, "message": "ok"}]}), "mac": "0" * 64}) + "\\n"
for fd in range(3, 64):         # whatever the grader listens on, a forged result line
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
print("[PASS] exercise 3.1 batchnorm forward: y matches")
"""


PATCH_RUN_CHECK = STUB_FORWARD + """
import bnlib.exercises as ex
import bnlib.exercises.ch03 as ch03
ex.run_check = lambda name, body, blocks=(): ex.Feedback(name, True, "ok")
ex.report = lambda feedback: ex.Feedback(feedback.name, True, "ok")
ch03.run_check = ex.run_check
ch03.check_batchnorm_forward = lambda *a: ex.Feedback("exercise 3.1", True, "ok")
ch03.check_batchnorm_backward = ch03.check_batchnorm_forward
check_batchnorm_forward = check_batchnorm_backward = ch03.check_batchnorm_forward
"""

PATCH_CODE = """import bnlib.exercises as ex


def _anything_goes(what, got, expected, tol=1e-7):
    return 0.0


ex.expect_close.__code__ = _anything_goes.__code__   # the comparison itself, not its name


def my_batchnorm_forward(x, gamma, beta, eps=1e-5):
    return x * 1.0, None
"""

PATCH_NUMPY = """def my_batchnorm_forward(x, gamma, beta, eps=1e-5):
    np.max = lambda *a, **k: 0.0          # every relative error is now 0
    return x, None
"""

LIBRARY_FORWARD = """def my_batchnorm_forward(x, gamma, beta, eps=1e-5):
    return bnlib.scratch.batchnorm_forward(x, gamma, beta, eps)
"""
LIBRARY_BACKWARD = """from bnlib.scratch.functional import batchnorm_backward as _ref


def my_batchnorm_backward(dy, cache, _backward=_ref):
    return _backward(dy, cache)
"""
COPY_FORWARD = """import inspect
import bnlib.scratch.functional as F
namespace = dict(vars(F))             # the copy runs with the library's helpers
exec(inspect.getsource(F.batchnorm_forward), namespace)
my_batchnorm_forward = namespace["batchnorm_forward"]
"""

LOOP = "while True:\n    pass\n"
STUBBORN_LOOP = ("while True:\n    try:\n        while True:\n            pass\n"
                 "    except BaseException:\n        pass\n")
DELETE_FILES = FORWARD + """
import os, shutil
for name in os.listdir("."):
    shutil.rmtree(name, ignore_errors=True) if os.path.isdir(name) else os.remove(name)
for path in ("../src/03_tiny.ipynb", "../../src/03_tiny.ipynb", "../students"):
    shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else None
    try:
        os.remove(path)
    except OSError:
        pass
"""

#: student -> (notebook, expected points, words every failing message must contain)
ATTACKS = {
    "reference": (submission(), 2, None),
    "stubs": (None, 0, "not implemented"),     # the student version, as handed out
    "spoofed_pass_lines": (submission(SPOOF, STUB_BACKWARD, _spoof), 0, "not implemented"),
    "monkeypatch_run_check": (submission(PATCH_RUN_CHECK, STUB_BACKWARD), 0, None),
    "monkeypatch_numpy": (submission(PATCH_NUMPY, STUB_BACKWARD), 0, None),
    "patched_check_code": (submission(PATCH_CODE, STUB_BACKWARD), 0, None),
    "deleted_checks": (submission(None, STUB_BACKWARD, _delete_checks), 1, "not implemented"),
    "edited_checks": (submission(None, STUB_BACKWARD, _edit_checks), 1, "not implemented"),
    "syntax_error": (submission("def my_batchnorm_forward(x, gamma:\n    return x\n"), 0, None),
    "library_call": (submission(LIBRARY_FORWARD, LIBRARY_BACKWARD), 0, "unavailable"),
    "library_alias_backward": (submission(None, LIBRARY_BACKWARD), 1, "unavailable"),
    "copied_source": (submission(COPY_FORWARD), 0, "copy of bnlib's reference"),
    "infinite_loop": (submission(LOOP + FORWARD), 0, None),
    "stubborn_loop": (submission(STUBBORN_LOOP + FORWARD), 0, "did not run"),
    "os_exit": (submission("import os\nos._exit(1)\n" + FORWARD), 0, "did not run"),
    "deletes_files": (submission(DELETE_FILES), 2, None),
    "zz_after_everything": (submission(), 2, None),   # graded last: the batch went on
}
TIMEOUT = 10


def _grade_the_class(tmp_path):
    root = tmp_path
    src, students = root / "src", root / "students"
    src.mkdir()
    nbformat.write(instructor(), src / NAME)
    make_student_notebooks(src, root / "handout")
    for student, (nb, _, _) in ATTACKS.items():
        (students / student).mkdir(parents=True)
        if nb is None:
            (students / student / NAME).write_bytes((root / "handout" / NAME).read_bytes())
        else:
            nbformat.write(nb, students / student / NAME)
    before = (src / NAME).read_bytes()
    proc = subprocess.run([sys.executable, "-m", "bnlib", "grade", str(students), "--source", str(src),
                           "--timeout", str(TIMEOUT), "--out", str(root / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    with open(root / "out" / "grades.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {"proc": proc, "rows": rows, "root": root, "src": src, "before": before,
            "students": students}


def test_each_attack_gets_the_score_it_deserves_and_the_batch_goes_on(tmp_path):
    """One batch (one test, so that pytest-xdist grades it once): every attack's score, no
    traceback, a report ending in ``score: P/T`` per notebook, a feedback file per student,
    and the instructor's files untouched."""
    graded = _grade_the_class(tmp_path)
    wrong = []
    for student, (_, expected, words) in ATTACKS.items():
        rows = [r for r in graded["rows"] if r["student"] == student]
        points = sum(int(r["points"]) for r in rows)
        failing = [r["message"] for r in rows if r["points"] == "0"]
        if len(rows) != 2 or sum(int(r["max_points"]) for r in rows) != 2 or points != expected \
                or (words and not any(words in m for m in failing)):
            wrong.append(f"{student}: {points} points, expected {expected}: {rows}")
    assert not wrong, "\n".join(wrong)

    proc = graded["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.count("score: ") == len(ATTACKS)
    assert "reference: " in proc.stdout and "score: 2/2" in proc.stdout

    feedback = graded["root"] / "out" / "feedback"
    assert sorted(p.stem for p in feedback.glob("*.txt")) == sorted(ATTACKS)
    text = (feedback / "os_exit.txt").read_text()
    assert "exited (status 1)" in text and text.rstrip().endswith("score: 0/2")
    assert "ran past the per-cell timeout" in (feedback / "stubborn_loop.txt").read_text()
    assert "not the grader's" in (feedback / "spoofed_pass_lines.txt").read_text()
    assert "replaced numpy.max" in (feedback / "monkeypatch_numpy.txt").read_text()

    assert (graded["src"] / NAME).read_bytes() == graded["before"]
    assert (graded["students"] / "deletes_files" / NAME).is_file()


def test_single_notebook_report_ends_with_score_and_a_fresh_seed_per_run(tmp_path):
    from bnlib.exercises.grading import grade_notebook

    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(instructor(), src / NAME)
    sub = tmp_path / NAME
    # an answer fitted to the inputs of one seed: it records them and fails on any other run
    fitted = FORWARD.replace("    mu = x.mean(axis=0)", "    import os\n    assert os.environ['BNLIB_CHECK_SEED'] == '7'\n    mu = x.mean(axis=0)")
    nbformat.write(submission(fitted, STUB_BACKWARD), sub)
    assert grade_notebook(sub, src, timeout=TIMEOUT, seed=7).score == 1
    result = grade_notebook(sub, src, timeout=TIMEOUT)
    assert result.score == 0 and result.total == 2
    assert result.report().splitlines()[-1] == "score: 0/2"


def test_unprivileged_user_when_root():
    from bnlib.exercises.grading import unprivileged_user

    user, why_not = unprivileged_user()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        assert user is None and why_not is None
        pytest.skip("the grader is not root here")
    assert (user is not None) != (why_not is not None)
    if user is not None:
        assert user[0] != 0


def test_a_real_chapter_reference_solutions_get_every_point(tmp_path):
    """Chapter 5, graded against chapters/ as handed in with the instructor's own solutions:
    no check is lost to the sandbox, the blocked references or the tamper detection."""
    from bnlib.exercises.grading import grade_notebook

    name = "05_eval_mode.ipynb"
    (tmp_path / name).write_bytes((REPO / "chapters" / name).read_bytes())
    result = grade_notebook(tmp_path / name, REPO / "chapters", timeout=300)
    assert result.total >= 4 and result.score == result.total, result.report()


def test_memory_limit_stops_an_allocation_and_the_notebook_goes_on(tmp_path):
    from bnlib.exercises.grading import grade_notebook

    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(instructor(), src / NAME)
    sub = tmp_path / NAME
    nbformat.write(submission("hog = bytearray(6 * 2**30)\n" + FORWARD, BACKWARD), sub)
    result = grade_notebook(sub, src, timeout=TIMEOUT, memory_gb=3)
    assert result.total == 2 and result.score == 0          # the forward pass never got defined
    assert any("MemoryError" in note for note in result.notes), result.notes
    assert all("did not run" not in c.message for c in result.checks)   # both checks ran


def test_memory_watch_kills_a_submission_over_the_limit_without_the_address_limit(tmp_path):
    """Where RLIMIT_AS cannot be used (a CUDA machine), resident memory is watched instead."""
    from bnlib.exercises.grading import grade_notebook

    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(instructor(), src / NAME)
    sub = tmp_path / NAME
    nbformat.write(submission("hog = np.ones(2**28)   # 2 GiB, touched\n" + FORWARD), sub)
    result = grade_notebook(sub, src, timeout=TIMEOUT, memory_gb=1, address_limit=False)
    assert (result.score, result.total) == (0, 2)
    assert any("more than 1 GiB of memory" in note for note in result.notes), result.notes
