"""Stored results: run an experiment over seeds, aggregate, save with provenance, load.

Every number a chapter quotes from a long run comes from a file
``results/NAME/SCALE.json`` written by

    python -m bnlib reproduce NAME [NAME ...] --scale paper --seeds 3

and read back with :func:`load`.  A file holds

* ``name``, ``scale``, ``seeds`` (the list of seeds run) and ``config`` (the
  experiment's configuration at that scale, seed 0's values);
* ``per_seed``: one entry per seed, ``{"seed": s, "summary": {...}}``, the
  experiment's ``summary()`` with its wall-clock entries taken out;
* ``summary``: for every numeric leaf of the per-seed summaries, flattened to a
  slash-separated key (``"bn/final_test_acc"``, ``"test_error/bn/0"``: keys such as
  ``"0.01"`` hold dots), its ``mean``, ``sd``,
  ``ci95`` (half-width of the 95% Student-t interval of the mean; ``None`` for
  one seed) and ``n`` (seeds where the value is a finite number; a step "never
  reached" is ``None`` and not counted);
* ``timings``: each seed's wall-clock entries (seconds, steps per second,
  thread counts) - machine-dependent, so kept apart from ``per_seed`` and
  ``summary``: two runs with the same seeds give identical ``per_seed`` and
  ``summary`` on the same machine;
* ``provenance``: ``commit``, ``date``, ``python``, ``numpy``, ``torch``,
  ``machine`` (CPU model or GPU name), ``threads``, ``wall_s``, ``command``.

Conclusions are drawn from *differences*: :func:`paired_difference` gives the
mean and 95% interval of ``a - b`` over the seeds both were measured on (the
two arms of one run share a seed, so the pairing removes the noise they share),
and says whether the interval excludes zero.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["RESULTS_DIR", "REPRODUCE", "load", "path_for", "stored", "reproduce", "reproduce_many",
           "aggregate", "flatten", "ci95", "paired_difference", "unpaired_difference", "Difference", "stat", "fmt",
           "is_timing_key", "table", "glue"]

#: the repository's ``results/`` folder (``BNLIB_RESULTS`` overrides it)
RESULTS_DIR = Path(os.environ.get("BNLIB_RESULTS", Path(__file__).resolve().parent.parent / "results"))

#: the command that regenerates a stored file, printed under every table built from one
REPRODUCE = "python -m bnlib reproduce {name} --scale {scale} --seeds {n}"

#: words in a part of a summary key that mark a wall-clock quantity (kept out of ``summary``)
_TIMING_WORDS = ("seconds", "wall", "thread", "timing", "elapsed", "time", "ms_per")


def is_timing_key(key: str) -> bool:
    """Whether the flattened summary key ``key`` names a machine-dependent timing.

    A key is a timing when one of its ``/``-separated parts ends in ``_s``
    (``train_s``, ``steps_per_s``) or contains ``seconds``, ``wall``,
    ``thread``, ``timing``, ``elapsed``, ``time`` or ``ms_per``
    (``ms_per_step``, ``bn_time_ratio``).  ``median_beta_per_step`` is not.
    """
    for part in key.split("/"):
        low = part.lower()
        if low.endswith("_s") or any(w in low for w in _TIMING_WORDS):
            return True
    return False


# --------------------------------------------------------------------------- statistics

def ci95(values: Sequence[float]) -> float | None:
    """Half-width of the 95% Student-t confidence interval of the mean of ``values``.

    ``t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation;
    ``None`` for fewer than two values.
    """
    x = np.asarray([v for v in values if v is not None], dtype=float)
    n = len(x)
    if n < 2:
        return None
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))


def _number(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None if v is None else float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return None
    return None


def flatten(summary: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts and lists to ``{"a/b/0": leaf}``."""
    out: dict[str, Any] = {}
    if isinstance(summary, dict):
        for k, v in summary.items():
            out.update(flatten(v, f"{prefix}{k}/"))
    elif isinstance(summary, (list, tuple)):
        for i, v in enumerate(summary):
            out.update(flatten(v, f"{prefix}{i}/"))
    else:
        out[prefix[:-1]] = summary
    return out


def aggregate(per_seed_summaries: Sequence[dict]) -> dict[str, dict]:
    """``{key: {mean, sd, ci95, n, values}}`` for every numeric leaf of the summaries.

    A leaf that is a number in at least one seed is aggregated; ``None`` or
    non-finite values (a target never reached, a diverged run) are left out of
    the mean and counted in ``missing``.
    """
    flat = [flatten(s) for s in per_seed_summaries]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    out = {}
    for key in keys:
        raw = [f.get(key) for f in flat]
        if not any(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                   for v in raw):
            continue
        values = [_number(v) for v in raw]
        present = [v for v in values if v is not None]
        out[key] = {
            "mean": float(np.mean(present)) if present else None,
            "sd": float(np.std(present, ddof=1)) if len(present) > 1 else None,
            "ci95": ci95(present),
            "n": len(present),
            "missing": len(values) - len(present),
            "values": values,
        }
    return out


@dataclass
class Difference:
    """Mean and 95% interval of a paired difference ``a - b`` over seeds."""

    a: str
    b: str
    mean: float
    ci95: float | None
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.ci95 if self.ci95 is not None else math.inf)

    @property
    def high(self) -> float:
        return self.mean + (self.ci95 if self.ci95 is not None else math.inf)

    @property
    def resolved(self) -> bool:
        """True when the 95% interval of the difference excludes zero."""
        return self.ci95 is not None and (self.low > 0 or self.high < 0)

    @property
    def direction(self) -> str:
        """``"a > b"``, ``"a < b"`` or ``"unresolved"``."""
        if not self.resolved:
            return "unresolved"
        return f"{self.a} > {self.b}" if self.mean > 0 else f"{self.a} < {self.b}"

    def format(self, scale: float = 1.0, decimals: int = 3) -> str:
        """``"+0.047 ± 0.040"``: the mean difference and the half-width, times ``scale``."""
        half = "n/a" if self.ci95 is None else f"{self.ci95 * scale:.{decimals}f}"
        return f"{self.mean * scale:+.{decimals}f} ± {half}"

    def __str__(self) -> str:
        half = "n/a" if self.ci95 is None else f"{self.ci95:.3g}"
        return (f"{self.a} - {self.b} = {self.mean:.3g} +- {half} (95%, n={self.n}): "
                f"{self.direction}")


def paired_difference(result: dict, a: str, b: str) -> Difference:
    """The difference ``a - b`` of two summary keys of one stored result, paired by seed."""
    sa, sb = stat(result, a), stat(result, b)
    pairs = [(x, y) for x, y in zip(sa["values"], sb["values"]) if x is not None and y is not None]
    if not pairs:
        raise ValueError(f"no seed has both {a!r} and {b!r}")
    d = [x - y for x, y in pairs]
    return Difference(a, b, float(np.mean(d)), ci95(d), len(d))


def unpaired_difference(result_a: dict, key_a: str, result_b: dict, key_b: str) -> Difference:
    """The difference of two quantities measured on *independent* runs (Welch's 95% interval).

    For two arms that do not share seeds (two stored results, two scales), the
    half-width is ``t * sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the
    Welch-Satterthwaite degrees of freedom.
    """
    a = [v for v in stat(result_a, key_a)["values"] if v is not None]
    b = [v for v in stat(result_b, key_b)["values"] if v is not None]
    if not a or not b:
        raise ValueError(f"no values for {key_a!r} or {key_b!r}")
    mean = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return Difference(key_a, key_b, mean, None, min(len(a), len(b)))
    from scipy import stats

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(key_a, key_b, mean, 0.0, min(len(a), len(b)))
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Difference(key_a, key_b, mean, float(stats.t.ppf(0.975, dof) * se),
                      min(len(a), len(b)))


def stat(result: dict, key: str) -> dict:
    """The aggregate ``{mean, sd, ci95, n, ...}`` of ``key`` in a loaded result (clear error if absent)."""
    try:
        return result["summary"][key]
    except KeyError:
        close = [k for k in result["summary"] if key.split("/")[0] in k][:8]
        raise KeyError(f"{result['name']}/{result['scale']} has no summary key {key!r}; "
                       f"similar: {close}") from None


# --------------------------------------------------------------------------- files

def path_for(name: str, scale: str, results_dir: str | Path | None = None) -> Path:
    return Path(results_dir or RESULTS_DIR) / name / f"{scale}.json"


def load(name: str, scale: str = "paper", results_dir: str | Path | None = None) -> dict:
    """The stored result ``results/NAME/SCALE.json`` as a dict (see the module docstring).

    The dict also has ``"command"``: the ``reproduce`` command that regenerates it.
    """
    path = path_for(name, scale, results_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"no stored result {path}; make it with "
            f"'{REPRODUCE.format(name=name, scale=scale, n=3)}'")
    data = json.loads(path.read_text())
    data["command"] = REPRODUCE.format(name=name, scale=scale, n=len(data["seeds"]))
    return data


def stored(results_dir: str | Path | None = None) -> list[dict]:
    """One dict per stored file: name, scale, seeds, date, wall_s, path."""
    root = Path(results_dir or RESULTS_DIR)
    rows = []
    for path in sorted(root.glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            rows.append({"name": path.parent.name, "scale": path.stem, "error": str(err),
                         "path": str(path)})
            continue
        prov = data.get("provenance", {})
        rows.append({"name": data.get("name"), "scale": data.get("scale"),
                     "seeds": data.get("seeds", []), "date": prov.get("date"),
                     "wall_s": prov.get("wall_s"), "commit": prov.get("commit"),
                     "path": str(path)})
    return rows


def _write_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``:
    an interrupted run leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)             # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- provenance

def _machine(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(0)
        except Exception:  # pragma: no cover - no GPU here
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "bnlib"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(wall_s: float, device: str = "cpu", threads: int | None = None,
               command: str = "") -> dict:
    import torch

    return {
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "machine": _machine(device),
        "cores": os.cpu_count(),
        "threads": threads,
        "wall_s": round(wall_s, 1),
        "command": command,
    }


# --------------------------------------------------------------------------- reproduce

def _split_timings(summary: dict) -> tuple[dict, dict]:
    """``(summary without timings, {flat_key: value} of the timings)``."""
    def strip(node, prefix=""):
        if isinstance(node, dict):
            kept = {}
            for k, v in node.items():
                key = f"{prefix}{k}"
                if is_timing_key(key):
                    timings.update({f"{key}/{kk}" if kk else key: vv
                                    for kk, vv in (flatten(v).items() if isinstance(v, (dict, list))
                                                   else [("", v)])})
                else:
                    kept[k] = strip(v, key + "/")
            return kept
        return node

    timings: dict[str, Any] = {}
    return strip(summary), timings


def _run_one(name: str, scale: str, seed: int, device: str) -> tuple[dict, dict, dict]:
    """Run one seed; return (jsonable summary, timings, config dict)."""
    from bnlib import experiments
    from bnlib.experiments.base import Timer, _jsonable

    module = experiments.get(name)
    config = module.Config.at_scale(scale, seed=seed, device=device)
    with Timer() as t:
        result = module.run(config, progress=False)
    summary, timings = _split_timings(_jsonable(result.summary()))
    timings.update({f"run/{k}": v for k, v in _jsonable(result.timings).items()})
    timings["wall_s"] = t.seconds
    return summary, timings, _jsonable(config.to_dict())


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must name at least one seed")
    if any(s < 0 for s in seed_list):
        raise ValueError(f"seeds must be >= 0; got {seed_list}")
    return seed_list


def _store(name: str, scale: str, seed_list: list[int], outputs: dict[int, tuple], wall_s: float,
           device: str, results_dir) -> Path:
    """Aggregate the per-seed outputs of one experiment and write its file atomically."""
    per_seed = [{"seed": s, "summary": outputs[s][0]} for s in seed_list]
    config = dict(outputs[seed_list[0]][2])
    config.pop("seed", None)
    data = {
        "name": name,
        "scale": scale,
        "seeds": seed_list,
        "config": config,
        "per_seed": per_seed,
        "summary": aggregate([p["summary"] for p in per_seed]),
        "timings": {str(s): outputs[s][1] for s in seed_list},
        "provenance": provenance(wall_s, device, config.get("threads"),
                                 REPRODUCE.format(name=name, scale=scale, n=len(seed_list))),
    }
    path = path_for(name, scale, results_dir)
    _write_atomic(path, data)
    return path


def reproduce_many(names: Sequence[str], scale: str = "paper", seeds: int | Iterable[int] = 3, *,
                   results_dir: str | Path | None = None, device: str = "cpu", jobs: int = 1,
                   progress: bool = False, on_done=None) -> list[Path]:
    """:func:`reproduce` for several experiments, their seeds packed into one pool of ``jobs``.

    Every (experiment, seed) pair is a task for the pool, so no worker idles while
    another experiment still has seeds to run; each file is written as soon as all
    its seeds are done (``on_done(path)`` is called then).  Its ``wall_s`` is the
    time from the start of the pool to its last seed.
    """
    from bnlib import experiments

    for name in names:
        experiments.get(name)  # unknown name: KeyError before any work
    seed_list = _seed_list(seeds)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    from bnlib.progress import progress as bar

    start = time.perf_counter()
    outputs: dict[str, dict[int, tuple]] = {n: {} for n in names}
    paths = []

    def finished(name, seed, out):
        outputs[name][seed] = out
        if len(outputs[name]) == len(seed_list):
            path = _store(name, scale, seed_list, outputs[name], time.perf_counter() - start,
                          device, results_dir)
            paths.append(path)
            if on_done:
                on_done(path)

    tasks = [(n, s) for n in names for s in seed_list]
    with bar(total=len(tasks), desc=f"reproduce ({scale})", enabled=progress) as pbar:
        if jobs == 1:
            for n, s in tasks:
                finished(n, s, _run_one(n, scale, s, device))
                pbar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_run_one, n, scale, s, device): (n, s) for n, s in tasks}
                for fut in as_completed(futures):
                    n, s = futures[fut]
                    finished(n, s, fut.result())
                    pbar.update(1)
    return paths


def reproduce(name: str, scale: str = "paper", seeds: int | Iterable[int] = 3, *,
              results_dir: str | Path | None = None, device: str = "cpu", jobs: int = 1,
              progress: bool = False) -> Path:
    """Run experiment ``name`` at ``scale`` for each seed, aggregate, write the file; return its path.

    ``seeds`` is a count K (seeds 0..K-1) or an explicit list.  ``jobs`` > 1 runs
    seeds in that many processes (each experiment uses one thread by default).
    The file is written only when every seed has finished
    (:func:`reproduce_many` with one name).
    """
    return reproduce_many([name], scale, seeds, results_dir=results_dir, device=device,
                          jobs=jobs, progress=progress)[0]


def fmt(result: dict, key: str, decimals: int = 3, scale: float = 1.0) -> str:
    """``"mean ± ci95"`` of a summary key for a table, each times ``scale`` (100: percent).

    A value some seeds never reached says so: ``"1200 ± 300 (1 of 3 never)"``.
    """
    s = stat(result, key)
    if s["mean"] is None:
        return "never"
    out = f"{s['mean'] * scale:.{decimals}f}"
    if s["ci95"] is not None:
        out += f" ± {s['ci95'] * scale:.{decimals}f}"
    if s["missing"]:
        out += f" ({s['missing']} of {s['n'] + s['missing']} never)"
    return out


def glue(name: str, value, digits: int = 6):
    """Glue ``value`` for the prose (``{glue:text}`name:.3f``` in markdown, MyST-NB); return it.

    NumPy scalars become Python numbers (MyST-NB cannot format them), floats are
    rounded to ``digits`` significant digits so that the stored output does not
    hang on the last bits of a float; strings (a verdict phrase) pass as they are.
    """
    from myst_nb import glue as myst_glue

    if isinstance(value, (bool, np.bool_)):
        value = bool(value)
    elif isinstance(value, (int, np.integer)):
        value = int(value)
    elif isinstance(value, (float, np.floating)):
        value = float(f"{float(value):.{digits}g}")
    myst_glue(name, value, display=False)
    return value


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], results: Sequence[dict] = ()):
    """A Markdown table for a notebook cell, with the command that regenerates each stored result.

    ``rows`` are lists of cells (strings, or numbers printed as they are);
    ``results`` are the loaded results the table was built from: their
    ``reproduce`` commands and provenance (date, machine, seeds) are printed
    under the table, so a reader can regenerate it.
    """
    from IPython.display import Markdown

    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    seen = set()
    notes = []
    for r in results:
        if r["command"] in seen:
            continue
        seen.add(r["command"])
        prov = r.get("provenance", {})
        notes.append(f"`{r['command']}` ({len(r['seeds'])} seeds, {prov.get('date', '?')[:10]}, "
                     f"{prov.get('machine', '?')}, {prov.get('wall_s', 0):.0f} s)")
    if notes:
        lines += ["", "Mean ± 95% interval over seeds. Regenerate with: " + "; ".join(notes) + "."]
    return Markdown("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m bnlib reproduce NAME --scale paper --seeds 3")
