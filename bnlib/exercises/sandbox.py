"""The process that runs one submission for :mod:`bnlib.exercises.grading`.

Started by the grader as ``python -m bnlib.exercises.sandbox FD`` in a
temporary working copy, with a memory limit and (when the grader is root) as
an unprivileged user.  It reads its job from stdin (a JSON object: the
per-run secret, the cells to run, the check modules, the per-cell timeout),
closes stdin, and runs the cells in one IPython shell.  Code cells (the
instructor's cells with the student's solution cells in place) run as
written; for a check cell it

1. imports the chapter's ``bnlib.exercises`` modules afresh from the
   instructor's copy of bnlib, so nothing the student's code did to them
   (replacing ``run_check``, ``report`` or a ``check_*`` function) survives,
   and binds the cell's ``check_*`` names to the fresh functions;
2. records every :class:`~bnlib.exercises.Feedback` the fresh ``run_check``
   returns, and notes whether the student's code changed the check modules,
   NumPy or the builtins while the check ran;
3. reports ``done`` with that record on the result pipe.

Every report is a JSON line with a sequence number and an HMAC-SHA256 under
the secret, which the student's code never sees: a line it prints or writes
into the pipe is rejected by the grader.  Nothing the notebook prints counts.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import hmac
import importlib
import json
import os
import signal
import sys
import traceback


class CellTimeout(BaseException):
    """Raised in a cell that runs past the per-cell timeout."""


def _signer(fd: int, secret: bytes):
    counter = [0]

    def send(message: dict) -> None:
        counter[0] += 1
        message = dict(message, n=counter[0])
        payload = json.dumps(message, sort_keys=True)
        mac = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
        data = (json.dumps({"payload": payload, "mac": mac}) + "\n").encode()
        while data:
            data = data[os.write(fd, data):]

    return send


def _check_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and node.id.startswith("check_")}


def _fresh_check_modules(names: list[str]) -> dict[str, object]:
    """Import ``bnlib.exercises`` and the check modules afresh; return them by name."""
    for key in [k for k in sys.modules if k == "bnlib.exercises" or k.startswith("bnlib.exercises.")]:
        del sys.modules[key]
    importlib.invalidate_caches()
    modules = {"bnlib.exercises": importlib.import_module("bnlib.exercises")}
    for name in names:
        modules[name] = importlib.import_module(name)
    return modules


def _watched() -> dict:
    import numpy

    return {"numpy": numpy, "numpy.linalg": numpy.linalg, "builtins": builtins}


def _snapshot(modules) -> dict:
    return {name: dict(vars(module)) for name, module in modules.items()}


def _changed(before: dict, modules) -> str | None:
    """The first name an existing binding of which was replaced or deleted (additions are fine)."""
    for name, module in modules.items():
        now = vars(module)
        for key, value in before[name].items():
            if key in ("__builtins__", "_RECORDER"):
                continue
            if now.get(key, KeyError) is not value:
                return f"{name}.{key}"
    return None


def main(fd: int) -> None:
    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    os.close(0)
    send = _signer(fd, bytes.fromhex(job.pop("secret")))
    cell_timeout = float(job["cell_timeout"])

    def on_alarm(signum, frame):
        raise CellTimeout(f"the cell ran past the per-cell timeout of {cell_timeout:g} s")

    signal.signal(signal.SIGALRM, on_alarm)

    import types

    main_module = types.ModuleType("__main__")
    sys.modules["__main__"] = main_module
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(user_module=main_module)
    shell.showtraceback = lambda *a, **k: traceback.print_exc()   # to the log, short
    check_modules = job["check_modules"]
    base = _snapshot(_watched())   # NumPy and the builtins as the student found them

    for cell in job["cells"]:
        index, kind, source = cell["index"], cell["kind"], cell["source"]
        send({"event": "start", "cell": index})
        error, feedback, tampered = None, [], None
        signal.setitimer(signal.ITIMER_REAL, cell_timeout)
        try:
            if kind == "check":
                modules = _fresh_check_modules(check_modules)
                recorded = []
                modules["bnlib.exercises"]._RECORDER = recorded.append
                namespace = dict(shell.user_ns)
                for name in _check_names(source):
                    for module in modules.values():
                        if hasattr(module, name):
                            namespace[name] = getattr(module, name)
                before = _snapshot(modules)
                try:
                    exec(compile(source, f"<check cell {index}>", "exec"), namespace)
                except BaseException as err:   # noqa: BLE001 - a failed check, reported below
                    error = f"{type(err).__name__}: {err}"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                tampered = _changed(before, modules) or _changed(base, _watched())
                cls = modules["bnlib.exercises"].Feedback
                feedback = [{"name": str(fb.name), "passed": fb.passed is True, "message": str(fb.message)}
                            if type(fb) is cls else {"name": "?", "passed": False,
                                                     "message": "not a Feedback"}
                            for fb in recorded]
            else:
                result = shell.run_cell(source, store_history=False, silent=False)
                signal.setitimer(signal.ITIMER_REAL, 0)
                err = result.error_before_exec or result.error_in_exec
                if err is not None:
                    error = f"{type(err).__name__}: {err}"
        except BaseException as err:   # noqa: BLE001 - a timeout between statements
            signal.setitimer(signal.ITIMER_REAL, 0)
            error = f"{type(err).__name__}: {err}"
        send({"event": "done", "cell": index, "error": error, "feedback": feedback,
              "tampered": tampered})
    send({"event": "end"})


if __name__ == "__main__":
    main(int(sys.argv[1]))
