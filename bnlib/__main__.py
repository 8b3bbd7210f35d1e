"""Command line: ``python -m bnlib {list, run, reproduce, results, audit, bench, student, tag, grade}``.

* ``list``                      the experiments, one line each
* ``run NAME --scale S ...``    run one experiment, write NAME.json and NAME.png
* ``reproduce NAME... --scale S --seeds K``  run K seeds, write results/NAME/S.json
* ``results``                   list the stored results (name, scale, seeds, date, wall time)
* ``audit chapters``            list numbers in the prose that are not glued, maths or cited
* ``bench``                     time BN forward+backward: NumPy vs PyTorch (chapter 3);
                                ``--device cuda [--json PATH] [--shapes S]``: PyTorch,
                                torch.compile and Triton on a GPU (chapter 8)
* ``student SRC DST``           write the student version of the notebooks (no solutions)
* ``tag [PATHS]``                write nbgrader's cell metadata (``--check``: only check it)
* ``grade SUBMISSION...``       grade students' notebooks against the instructor's (``score: P/T``);
                                a folder of per-student folders gives grades.csv and feedback/

Bad arguments give a one-line error and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


class CLIError(Exception):
    """Bad input to a subcommand: printed as one line ``error: ...``, exit status 2."""


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


_non_negative.__name__ = "non-negative integer"
_positive.__name__ = "positive integer"


def _check_writable_dir(path: str | Path, option: str) -> Path:
    """Fail before any work when ``path`` cannot be created or written as a folder."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise CLIError(f"{option} {path}: {parent} is not writable")
            break
    return path


def _cmd_list(args) -> int:
    from bnlib import experiments

    items = experiments.available()
    width = max(map(len, items), default=0)
    for name, line in items.items():
        print(f"{name:<{width}}  {line}")
    return 0


def _cmd_run(args) -> int:
    from bnlib import experiments
    from bnlib._device import resolve_device

    try:
        module = experiments.get(args.name)
    except KeyError as err:
        raise CLIError(err.args[0]) from None
    try:
        device = resolve_device(args.device)
        config = module.Config.at_scale(args.scale, seed=args.seed, device=device)
    except ValueError as err:
        raise CLIError(str(err)) from None
    _check_writable_dir(args.out, "--out")   # before the run, not after it
    print(f"running {args.name} at {args.scale} scale on {device} (seed {args.seed})",
          file=sys.stderr)
    start = time.perf_counter()
    result = module.run(config, progress=True)
    result.timings.setdefault("total_s", time.perf_counter() - start)
    json_path, png_path = result.save(args.out)
    for key, value in result.summary().items():
        if not isinstance(value, (list, dict)):
            print(f"{key}: {value}")
    print(f"wrote {json_path} and {png_path} in {result.timings['total_s']:.1f} s")
    return 0


def _cmd_reproduce(args) -> int:
    from bnlib import experiments, results
    from bnlib._device import resolve_device

    for name in args.names:
        try:
            experiments.get(name)
        except KeyError as err:
            raise CLIError(err.args[0]) from None
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise CLIError(str(err)) from None
    _check_writable_dir(args.results or results.RESULTS_DIR, "--results")
    print(f"reproducing {', '.join(args.names)} at {args.scale} scale, seeds 0..{args.seeds - 1}, "
          f"on {device}, {args.jobs} process(es)", file=sys.stderr)

    def report(path):
        data = results.load(path.parent.name, args.scale, args.results)
        print(f"wrote {path} ({len(data['seeds'])} seeds, {data['provenance']['wall_s']:.0f} s)",
              flush=True)

    try:   # every (experiment, seed) in one pool: no idle worker between experiments
        results.reproduce_many(args.names, args.scale, args.seeds, results_dir=args.results,
                               device=device, jobs=args.jobs, progress=True, on_done=report)
    except OSError as err:
        raise CLIError(f"cannot write under --results {args.results or results.RESULTS_DIR}: "
                       f"{err.strerror or err}") from None
    return 0


def _cmd_results(args) -> int:
    from bnlib import results

    rows = results.stored(args.results)
    if not rows:
        print(f"no stored results under {args.results or results.RESULTS_DIR}")
        return 0
    print(f"{'name':<22} {'scale':<6} {'seeds':<12} {'date':<25} {'wall time':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<22} {r['scale']:<6} unreadable: {r['error']}")
            continue
        seeds = ",".join(map(str, r["seeds"]))
        wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else "?"
        print(f"{r['name']:<22} {r['scale']:<6} {seeds:<12} {r['date'] or '?':<25} {wall:>10}")
    return 0


def _cmd_audit(args) -> int:
    from bnlib import audit

    findings = []
    try:
        for path in audit.notebooks(args.paths):
            findings += audit.audit_file(path)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    for f in findings:
        print(f)
    print(f"{len(findings)} unsourced number(s) in prose", file=sys.stderr)
    return 1 if findings else 0


def _cmd_bench(args) -> int:
    from bnlib._device import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise CLIError(str(err)) from None
    if device == "cuda":  # chapter 8: PyTorch, cuDNN and the Triton kernels on the GPU
        from bnlib.kernels import bench as gpu_bench

        if args.json:
            _check_writable_dir(Path(args.json).parent, "--json")
        return gpu_bench.main("cuda", repeats=args.repeats, json_path=args.json, shapes=args.shapes)
    if args.json:
        raise CLIError("--json writes the GPU bench (chapter 8): use it with --device cuda")
    from bnlib import bench

    return bench.main(repeats=args.repeats)


def _same_folder(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _cmd_student(args) -> int:
    from bnlib.exercises import make_student_notebooks

    src, dst = Path(args.src), Path(args.dst)
    if not src.is_dir():
        raise CLIError(f"SRC {src} is not a folder of notebooks")
    if dst.exists() and not dst.is_dir():
        raise CLIError(f"DST {dst} is a file, not a folder")
    if _same_folder(src, dst):
        raise CLIError(f"DST {dst} is SRC: the student version would overwrite the solutions")
    if dst.is_dir() and any(dst.iterdir()) and not args.force:
        raise CLIError(f"DST {dst} exists and is not empty: pass --force to overwrite its notebooks")
    _check_writable_dir(dst, "DST")
    try:
        written = make_student_notebooks(src, dst)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    for path in written:
        print(path)
    return 0


def _cmd_tag(args) -> int:
    from bnlib.exercises.nbgrader import tag_files

    try:
        changed = tag_files(args.paths, check=args.check)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    except Exception as err:   # a file that is not a notebook
        raise CLIError(f"cannot tag: {type(err).__name__}: {err}") from None
    for path in changed:
        print(f"{'not tagged' if args.check else 'tagged'}: {path}")
    if args.check and changed:
        print(f"{len(changed)} notebook(s) lack nbgrader metadata: run python -m bnlib tag "
              + " ".join(args.paths), file=sys.stderr)
        return 1
    return 0


def _cmd_grade(args) -> int:
    from bnlib.exercises.grading import GradingError, grade_folder, grade_notebook

    if args.source is not None and not Path(args.source).is_dir():
        raise CLIError(f"--source {args.source} is not a folder")
    for path in map(Path, args.submissions):
        if path.is_dir():
            continue
        if not path.is_file():
            raise CLIError(f"no such notebook: {path}")
        try:
            import nbformat

            nbformat.read(path, as_version=4)
        except Exception as err:   # not JSON, not a notebook
            raise CLIError(f"{path} is not a readable notebook ({type(err).__name__})") from None
    options = {"timeout": args.timeout, "notebook_timeout": args.notebook_timeout,
               "memory_gb": args.memory or None}
    total_passed = total = 0
    for path in map(Path, args.submissions):
        try:
            if path.is_dir():
                graded, csv_path = grade_folder(path, args.source, args.out, **options)
                for student, grade in graded:
                    if isinstance(grade, str):
                        print(f"{student}: {grade}")
                        continue
                    print(f"{student}: {grade.report()}")
                    total_passed, total = total_passed + grade.score, total + grade.total
                print(f"wrote {csv_path} and {csv_path.parent / 'feedback'}/STUDENT.txt")
                continue
            grade = grade_notebook(path, args.source, **options)
        except GradingError as err:
            raise CLIError(str(err)) from None
        except Exception as err:   # never a traceback: say what failed, in one line
            raise CLIError(f"grading {path} failed: {type(err).__name__}: {err}") from None
        print(grade.report(), flush=True)
        total_passed, total = total_passed + grade.score, total + grade.total
    if len(args.submissions) > 1:
        print(f"total: {total_passed}/{total}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m bnlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="list the experiments").set_defaults(func=_cmd_list)

    run = sub.add_parser("run", help="run one experiment")
    run.add_argument("name")
    run.add_argument("--scale", default="book", choices=["smoke", "book", "paper"])
    run.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    run.add_argument("--seed", type=_non_negative, default=0)
    run.add_argument("--out", default="runs")
    run.set_defaults(func=_cmd_run)

    rep = sub.add_parser("reproduce", help="run experiments over seeds, store results/NAME/SCALE.json")
    rep.add_argument("names", nargs="+", metavar="NAME")
    rep.add_argument("--scale", default="paper", choices=["smoke", "book", "paper"])
    rep.add_argument("--seeds", type=_positive, default=3, help="run seeds 0..K-1 (default 3)")
    rep.add_argument("--results", default=None, help="folder to write under (default: results/)")
    rep.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    rep.add_argument("--jobs", type=_positive, default=1, help="seeds run in parallel processes")
    rep.set_defaults(func=_cmd_reproduce)

    res = sub.add_parser("results", help="list the stored results")
    res.add_argument("--results", default=None, help="folder to list (default: results/)")
    res.set_defaults(func=_cmd_results)

    aud = sub.add_parser("audit", help="list numbers in prose that are neither glued, maths nor cited")
    aud.add_argument("paths", nargs="*", default=["chapters"])
    aud.set_defaults(func=_cmd_audit)

    bench = sub.add_parser("bench", help="time BN forward+backward: NumPy vs PyTorch on the CPU "
                                         "(chapter 3), or PyTorch vs Triton on a GPU (chapter 8)")
    bench.add_argument("--repeats", type=_positive, default=20)
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    bench.add_argument("--json", default=None, metavar="PATH",
                       help="with --device cuda: write the results as JSON (chapter 8 reads results/gpu/*.json)")
    bench.add_argument("--shapes", default="all", choices=["book", "resnet50", "all"],
                       help="with --device cuda: which shapes to time (default all)")
    bench.set_defaults(func=_cmd_bench)

    student = sub.add_parser("student", help="write notebooks without solutions")
    student.add_argument("src", nargs="?", default="chapters")
    student.add_argument("dst", nargs="?", default="student")
    student.add_argument("--force", action="store_true",
                         help="overwrite the notebooks of a DST that is not empty")
    student.set_defaults(func=_cmd_student)

    tag = sub.add_parser("tag", help="write nbgrader's cell metadata into notebooks")
    tag.add_argument("paths", nargs="*", default=["chapters"])
    tag.add_argument("--check", action="store_true",
                     help="change nothing; exit 1 if a notebook is not tagged up to date")
    tag.set_defaults(func=_cmd_tag)

    grade = sub.add_parser("grade", help="grade students' notebooks against the instructor's")
    grade.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                       help="a notebook, or a folder with one sub-folder of notebooks per student")
    grade.add_argument("--source", default=None,
                       help="folder of the instructor's notebooks (default: chapters/)")
    grade.add_argument("--timeout", type=_positive, default=600,
                       help="seconds a cell may run before it is stopped (default 600)")
    grade.add_argument("--notebook-timeout", type=_positive, default=None,
                       help="seconds a whole notebook may run (default: 4 x --timeout, at least 3600)")
    grade.add_argument("--memory", type=float, default=8.0,
                       help="memory limit of a submission in GiB (default 8; 0: none)")
    grade.add_argument("--out", default=None,
                       help="where a folder's grades.csv and feedback/ go (default: the folder)")
    grade.set_defaults(func=_cmd_grade)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
