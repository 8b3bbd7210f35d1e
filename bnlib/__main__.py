"""Command line: ``python -m bnlib {list, run, bench, student, grade}``.

* ``list``                      the experiments, one line each
* ``run NAME --scale S ...``    run one experiment, write NAME.json and NAME.png
* ``bench``                     time BN forward+backward: NumPy vs PyTorch (chapter 3);
                                ``--device cuda``: PyTorch vs Triton on a GPU (chapter 8)
* ``student SRC DST``           write the student version of the notebooks (no solutions)
* ``grade NOTEBOOK...``         run notebooks and count the exercise checks that pass

Bad arguments give a one-line error and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time


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
        raise SystemExit(f"error: {err.args[0]}") from None
    try:
        device = resolve_device(args.device)
        config = module.Config.at_scale(args.scale, seed=args.seed, device=device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
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


def _cmd_bench(args) -> int:
    from bnlib._device import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if device == "cuda":  # chapter 8: PyTorch, cuDNN and the Triton kernels on the GPU
        from bnlib.kernels import bench as gpu_bench

        return gpu_bench.main("cuda", repeats=args.repeats)
    from bnlib import bench

    return bench.main(repeats=args.repeats)


def _cmd_student(args) -> int:
    from bnlib.exercises import make_student_notebooks

    written = make_student_notebooks(args.src, args.dst)
    for path in written:
        print(path)
    return 0


def _cmd_grade(args) -> int:
    from bnlib.exercises import grade

    total_passed = total = 0
    for path in args.notebooks:
        passed, count, lines = grade(path)
        print(f"{path}")
        for line in lines:
            print(f"  {line}")
        print(f"  score: {passed}/{count}")
        total_passed, total = total_passed + passed, total + count
    if len(args.notebooks) > 1:
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
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="runs")
    run.set_defaults(func=_cmd_run)

    bench = sub.add_parser("bench", help="time BN forward+backward: NumPy vs PyTorch on the CPU "
                                         "(chapter 3), or PyTorch vs Triton on a GPU (chapter 8)")
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    bench.set_defaults(func=_cmd_bench)

    student = sub.add_parser("student", help="write notebooks without solutions")
    student.add_argument("src", nargs="?", default="chapters")
    student.add_argument("dst", nargs="?", default="student")
    student.set_defaults(func=_cmd_student)

    grade = sub.add_parser("grade", help="run notebooks and count the checks that pass")
    grade.add_argument("notebooks", nargs="+")
    grade.set_defaults(func=_cmd_grade)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
