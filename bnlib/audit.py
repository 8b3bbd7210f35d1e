"""Audit the book's prose: every measured number must come from the code.

``python -m bnlib audit chapters book`` reads the markdown cells of every
notebook (and every Markdown page)
and lists each *audited number* that is not accounted for, one line each with
the notebook, the cell and the sentence, and exits 1 when there is any.

The rule
--------
**Audited numbers** are the ones a measurement produces:

* decimals (``0.955``, ``1.3``, ``27.5``),
* percentages (``97%``, ``97.3 %``, ``85 percent``),
* factors (``2x``, ``x10``, ``1.5×``, ``3 times faster``).

Plain integers (``3 epochs``, ``batch 64``, ``784-100-10``, ``seed 002``,
``1998``) are set-up counts, sizes, names and years and are not audited: a
measured integer in prose (a step count, say) is glued by the same convention
but the audit cannot tell it from a set-up count.

An audited number is **accounted for** when it is

1. glued: inside a ``{glue:text}`` / ``{glue}`` role (the value the notebook
   computed or loaded from ``results/``), or in any other role's target;
2. maths or code: inside ``$...$``, ``$$...$$``, a ``{math}`` block,
   ```` ``` ```` fences or an inline code span (``momentum=0.1``);
3. cited: in a sentence (or table cell) that carries a ``{cite}`` role, or
   names one of the book's source articles as ``seed 000`` ... ``seed 004``
   (see ``shared/seeds``) - numbers quoted from a publication stand beside
   the citation;
4. a set-up parameter: preceded within four words by one of the words in
   :data:`SETUP_WORDS` (``learning rate 0.01``, ``momentum 0.9``, ``std 0.03``,
   ``eps``), or a target written as ``to 90%`` / ``at least 90%`` /
   ``>= 90%`` (``steps to 90% test accuracy``), or the level of an
   interval (``95% interval``, ``95% confidence``);
5. a name: a section, figure, table, equation, exercise, algorithm, theorem or
   appendix number (``section 4.8``, ``Figure 1``, ``exercise 8.1``,
   ``C.2.3``), a section number at the start of a heading, or a version
   (``torch==2.13.0``, ``Python 3.11``, ``Jupyter Book 1.x``).

Anything else is reported.  A number that is neither measured nor quoted but
still needs to be in prose (a worked example's input, say) belongs in maths or
in a glued value.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["Finding", "audit_markdown", "audit_notebook", "glued_names", "audit_file", "notebooks", "SETUP_WORDS"]

#: words after which a decimal or percentage is a set-up parameter, not a measurement
SETUP_WORDS = (
    "learning rate", "learning-rate", "lr", "rate", "momentum", "decay", "weight decay",
    "eps", "epsilon", "alpha", "beta", "gamma", "dropout", "std", "standard deviation",
    "scale", "scaled by", "threshold", "target", "clip", "clipping", "temperature",
    "smoothing", "keep probability", "probability", "initialised to", "initialized to",
    "noise", "sigma", "p =", "set to", "tolerance", "tol",
)

_NAME_WORDS = (
    "section", "sections", "sec.", "chapter", "chapters", "figure", "figures", "fig.", "figs.",
    "table", "tables", "equation", "equations", "eq.", "exercise", "exercises", "algorithm",
    "theorem", "lemma", "proposition", "corollary", "appendix", "appendices", "definition",
    "part", "python", "torch", "pytorch", "triton", "numpy", "version", "book",
    "jupyter", "cuda", "myst-nb", "sphinx",
)

_FENCE = re.compile(r"^(```+|~~~+|:::+)\s*(\{?[\w:-]*\}?)(.*)$")
_PROSE_DIRECTIVES = {"{note}", "{tip}", "{warning}", "{important}", "{admonition}",
                     "{dropdown}", "{hint}", "{caution}", "{attention}", "{seealso}",
                     "{margin}", "{sidebar}", "{epigraph}", "{topic}", "{div}", "{card}"}

_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
_ENV_MATH = re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(?:\\.|[^$\\])+?\$")
_CODE = re.compile(r"``.+?``|`[^`\n]+`")
_ROLE = re.compile(r"\{([\w:.-]+)\}`[^`]*`")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML = re.compile(r"<[^>\n]+>")
_LABEL = re.compile(r"^\s*\([\w:.-]+\)=\s*$", re.M)
_COMMENT = re.compile(r"^\s*%.*$", re.M)
_HEADING_NUMBER = re.compile(r"^(#+\s+)[\dA-Z]+(\.\d+)*\.?(?=\s)", re.M)
_VERSION = re.compile(r"\b\d+(\.\d+){2,}\b|==\s*[\d.]+|\b\d+\.x\b")
_APPENDIX = re.compile(r"\b[A-Z]\.\d+(\.\d+)*\b")

_NUMBER = re.compile(
    r"(?<![\w.])"
    r"(?:(?<!\d )[x×]\s?\d[\d,]*(?:\.\d+)?"                 # x10.8, × 2 (not 8 x 8)
    r"|\d[\d,]*(?:\.\d+)?\s?(?:%|percent\b|per cent\b)"    # 97%, 85 percent
    r"|\d[\d,]*(?:\.\d+)?(?:x|×)(?![\w])"                  # 2x, 1.5×
    r"|\d[\d,]*(?:\.\d+)?\s+times\b"                       # 3 times
    r"|\d*\.\d+"                                           # 0.955, .5
    r"|\d[\d,]*\.\d+)"                                     # 1,234.5
)
_SOURCE = re.compile(r"\bseeds? 00\d\b", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*`$\[{])|\n\s*\n|\n(?=\s*[-*] )|\n(?=\s*\d+\. )")


@dataclass
class Finding:
    """One unsourced number: where it is and the sentence around it."""

    path: str
    cell: int
    cell_id: str
    number: str
    sentence: str

    def __str__(self) -> str:
        text = " ".join(self.sentence.split())
        if len(text) > 140:
            text = text[:137] + "..."
        return f"{self.path}: cell {self.cell} (id {self.cell_id}): {self.number!r} in: {text}"


def _strip_blocks(text: str) -> str:
    """Drop fenced code/maths/figure blocks; keep the body of admonition-like directives."""
    out, stack = [], []
    for line in text.splitlines():
        m = _FENCE.match(line.strip())
        if m:
            fence, info = m.group(1), m.group(2)
            if stack and stack[-1][0][0] == fence[0] and len(fence) >= len(stack[-1][0]) and not info:
                stack.pop()
                continue
            if not stack or stack[-1][1]:
                stack.append((fence, info in _PROSE_DIRECTIVES))
                continue
        if stack and not stack[-1][1]:
            continue
        if stack and line.strip().startswith(":") and re.match(r"^\s*:[\w-]+:", line):
            continue  # a directive option line
        out.append(line)
    return "\n".join(out)


def _mask(text: str) -> str:
    """Replace maths, code, roles other than cite, links' targets and markup by spaces."""
    def blank(m):
        return " " * len(m.group(0))

    def role(m):
        return m.group(0) if m.group(1).startswith("cite") else blank(m)

    text = _strip_blocks(text)
    text = _LABEL.sub(blank, text)
    text = _COMMENT.sub(blank, text)
    text = _DISPLAY_MATH.sub(blank, text)
    text = _ENV_MATH.sub(blank, text)
    text = _ROLE.sub(role, text)
    text = _CODE.sub(blank, text)
    text = _INLINE_MATH.sub(blank, text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _HTML.sub(blank, text)
    text = _HEADING_NUMBER.sub(lambda m: m.group(1), text)
    text = _VERSION.sub(blank, text)
    text = _APPENDIX.sub(blank, text)
    return text


def _units(text: str) -> Iterable[str]:
    """Sentences of prose; each table cell is a unit of its own."""
    prose = []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            yield from (c for c in line.strip().strip("|").split("|"))
        else:
            prose.append(line)
    yield from _SENTENCE_END.split("\n".join(prose))


def _words_before(sentence: str, start: int, n: int = 4) -> str:
    words = re.findall(r"[^\s]+", sentence[:start])
    return " ".join(words[-n:]).lower()


def _accounted(sentence: str, m: re.Match) -> bool:
    before = _words_before(sentence, m.start())
    last = before.split()[-1] if before else ""
    last = last.strip("(,;:*_")
    if last in _NAME_WORDS and "%" not in m.group(0):
        return True
    if last in ("and", "or", "to", "-") and re.search(
            r"\b(sections?|chapters?|figures?|tables?|exercises?|equations?)\s+[\d.]+\s*(,|and|or|to|-)?\s*$",
            sentence[:m.start()], re.I):
        return True   # "sections 5.3 and 5.4"
    if "%" in m.group(0) or "percent" in m.group(0):
        if re.match(r"\s*(t-|confidence |credible )?(interval|confidence|CI)\b",
                    sentence[m.end():], re.I):
            return True   # "95% interval": the name of a statistic, not a measurement
        if re.search(r"(\bto|at least|>=|≥|above|below|under|over)\s*$", sentence[:m.start()], re.I):
            return True
    for word in SETUP_WORDS:
        if re.search(rf"(^|[^\w]){re.escape(word)}([^\w]|$)", before):
            return True
    return False


def audit_markdown(text: str) -> list[tuple[str, str]]:
    """``[(number, sentence)]`` for every unaccounted audited number in markdown ``text``."""
    found = []
    for unit in _units(_mask(text)):
        if "{cite" in unit or _SOURCE.search(unit):
            continue
        for m in _NUMBER.finditer(unit):
            if not _accounted(unit, m):
                found.append((m.group(0).strip(), unit.strip()))
    return found


_GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)")


def glued_names(nb: dict) -> set[str]:
    """The names a stored notebook glued (MyST-NB keeps them in the outputs' metadata)."""
    names = set()
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            meta = out.get("metadata", {}).get("scrapbook", {})
            if "name" in meta:
                names.add(meta["name"])
    return names


def audit_notebook(path: str | Path) -> list[Finding]:
    """The findings of every markdown cell of one notebook.

    Besides unsourced numbers, a ``{glue:...}`` reference to a name that no
    stored output of the notebook glues is reported (number ``glue:NAME``): it
    would render as an error in the book.
    """
    nb = json.loads(Path(path).read_text())
    glued = glued_names(nb)
    findings = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "markdown":
            continue
        source = "".join(cell.get("source", []))
        for number, sentence in audit_markdown(source):
            findings.append(Finding(str(path), i, cell.get("id", "?"), number, sentence))
        for m in _GLUE_REF.finditer(source):
            name = m.group(1).strip()
            if name not in glued:
                findings.append(Finding(str(path), i, cell.get("id", "?"), f"glue:{name}",
                                        "no code cell output glues this name (run the notebook)"))
    return findings


def audit_file(path: str | Path) -> list[Finding]:
    """:func:`audit_notebook` for a notebook; a Markdown page (``.md``) is audited as one cell."""
    path = Path(path)
    if path.suffix == ".md":
        return [Finding(str(path), 0, "-", n, s) for n, s in audit_markdown(path.read_text())]
    return audit_notebook(path)


def notebooks(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.ipynb`` and ``.md`` files named by ``paths`` (folders searched, checkpoints skipped)."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix in (".ipynb", ".md")
                            and ".ipynb_checkpoints" not in q.parts)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such notebook or folder: {p}")
    return found
