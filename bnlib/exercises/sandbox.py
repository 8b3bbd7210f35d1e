"""The process that runs one submission for :mod:`bnlib.exercises.grading`.

Started by the grader as ``python -m bnlib.exercises.sandbox FD`` in a
temporary working copy, with a memory limit and (when the grader is root) as
an unprivileged user.  It reads its job from stdin (a JSON object: the
per-run secret, the cells to run, the check modules, the per-cell timeout),
closes stdin, and runs the cells in one IPython shell.  Code cells (the
instructor's cells with the student's solution cells in place) run as
written; for a check cell it

1. restores the chapter's ``bnlib.exercises`` modules to what they were when
   imported from the instructor's copy of bnlib at start-up, before any cell
   ran, so nothing the student's code did to them (replacing ``run_check``,
   ``report``, a ``check_*`` function or its code) survives, and binds the
   cell's ``check_*`` names to those functions;
2. records every :class:`~bnlib.exercises.Feedback` that ``run_check``
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


class _Pristine:
    """The check modules as imported before any student code ran, restored before each check.

    Restoring in place (module namespaces, the code, defaults and attributes of
    their functions, the namespaces of their classes) undoes whatever the
    student's code replaced, and keeps every object the notebook already holds
    (``from bnlib.exercises.ch06 import is_invariant``) the same object, so the
    check's blocking reaches it.
    """

    def __init__(self, names: list[str]):
        self.modules = {"bnlib.exercises": importlib.import_module("bnlib.exercises")}
        for name in names:
            try:
                self.modules[name] = importlib.import_module(name)
            except Exception:   # noqa: BLE001 - the check cell will say so
                pass
        self.namespaces = {name: dict(vars(m)) for name, m in self.modules.items()}
        self.functions, self.classes = [], []
        for name, module in self.modules.items():
            for value in self.namespaces[name].values():
                if getattr(value, "__module__", None) != name:
                    continue
                if isinstance(value, type):
                    self.classes.append((value, dict(vars(value))))
                    members = vars(value).values()
                else:
                    members = [value]
                for fn in members:
                    fn = getattr(fn, "__func__", fn)
                    if hasattr(fn, "__code__"):
                        self.functions.append((fn, fn.__code__, fn.__defaults__, fn.__kwdefaults__,
                                               dict(fn.__dict__)))

    def restore(self) -> dict:
        for name, module in self.modules.items():
            sys.modules[name] = module
            namespace = vars(module)
            namespace.clear()
            namespace.update(self.namespaces[name])
        for fn, code, defaults, kwdefaults, attrs in self.functions:
            fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
            fn.__dict__.clear()
            fn.__dict__.update(attrs)
        for cls, members in self.classes:
            for key in [k for k in vars(cls) if k not in members]:
                delattr(cls, key)
            for key, value in members.items():
                if key not in ("__dict__", "__weakref__") and vars(cls).get(key) is not value:
                    setattr(cls, key, value)
        return self.modules


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
    pristine = _Pristine(job["check_modules"])   # before any cell of the notebook runs
    base = _snapshot(_watched())   # NumPy and the builtins as the student found them

    for cell in job["cells"]:
        index, kind, source = cell["index"], cell["kind"], cell["source"]
        send({"event": "start", "cell": index})
        error, feedback, tampered = None, [], None
        signal.setitimer(signal.ITIMER_REAL, cell_timeout)
        try:
            if kind == "check":
                modules = pristine.restore()
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
