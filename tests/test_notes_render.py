"""The checks every derivation document must pass, for the bundled examples and random specs.

- Markdown: every ``$$ … $$`` block and ``$…$`` span renders with KaTeX in strict mode
  (tests/katex_check.js, run by node; .ci/run installs the pinned katex in .node/, or set
  KATEX_DIR to a katex package folder).  The bundled examples' Markdown is read from
  generated/*.md, which test_golden keeps equal to ``render_markdown``.  Without node or
  katex the KaTeX tests skip (under CI they fail), and a check that needs neither always
  runs: every macro and environment in the math is on a whitelist of names KaTeX supports
  (the whitelist is checked against KaTeX itself when KaTeX is there).  Both paths have a
  control: ``\\foo`` is an error.  The documents' Markdown conventions are checked on the
  way (display math on lines of its own, no space inside an inline ``$``, no ``|`` in the
  math of a table row: GitHub splits table cells on it first).
- PDF: pdflatex compiles the LaTeX with no warning of any kind, no overfull or underfull box
  and no missing character, run until it asks for no rerun (at least twice).  A failure shows
  the log lines and, for a display, the measured width of its rows.
- Random specs (tests/notes_specs.py) cover every activation and loss: a fast set here, a
  larger one under the slow marker.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from notes_specs import (
    CUSTOM_ACTIVATIONS,
    CUSTOM_LOSSES,
    MAX_DEPTH,
    MAX_WIDTH,
    OTHER_KINDS,
    RandomSpec,
    default_specs,
    slow_specs,
)

from symbackprop.derive import Derivation, derive
from symbackprop.functions import ACTIVATIONS, LOSSES, resolve
from symbackprop.graph import EXPANDED_LIMIT
from symbackprop.render import render_markdown, render_tex
from symbackprop.spec import ACTIVATION_PARAMETERS, NetworkSpec, bundled_examples, load_spec

ROOT = Path(__file__).resolve().parent.parent
KATEX_SCRIPT = ROOT / "tests" / "katex_check.js"
DEFAULT_KATEX_DIR = ROOT / ".node" / "node_modules" / "katex"
MAX_RUNS = 5  # pdflatex runs before a document that still asks for a rerun is a failure

# --- the documents ------------------------------------------------------------------------


class Document:
    """One spec's documents, each rendered when first asked for (once per test session)."""

    def __init__(self, name: str, spec_text: str, spec: NetworkSpec) -> None:
        self.name = name
        self.spec_text = spec_text  # shown in failure messages
        self.spec = spec

    @functools.cached_property
    def derivation(self) -> Derivation:
        return derive(self.spec)

    @functools.cached_property
    def tex(self) -> str:
        return render_tex(self.derivation)

    @functools.cached_property
    def md(self) -> str:
        return render_markdown(self.derivation)


@functools.cache
def bundled(name: str) -> Document:
    path = bundled_examples()[name]
    return Document(name, path.read_text(encoding="utf-8"), load_spec(path))


@functools.cache
def _random_document(spec: RandomSpec) -> Document:
    return Document(spec.name, spec.toml, spec.spec())


def _spec_ids(specs: tuple[RandomSpec, ...]) -> list:
    return [pytest.param(s, id=s.name) for s in specs]


# --- Markdown math: the conventions and the extraction (mirrors tests/katex_check.js) ------


@dataclass(frozen=True)
class Math:
    line: int
    display: bool
    source: str


def _without_code(line: str) -> str:
    """Inline code spans blanked out, so that their ``$`` are not math."""
    out, i = [], 0
    while i < len(line):
        if line[i] != "`":
            out.append(line[i])
            i += 1
            continue
        j = i
        while j < len(line) and line[j] == "`":
            j += 1
        fence = line[i:j]
        close = line.find(fence, j)
        if close < 0:
            out.append(fence)
            i = j
            continue
        out.append(" " * (close + len(fence) - i))
        i = close + len(fence)
    return "".join(out)


def markdown_math(text: str) -> tuple[list[Math], list[str]]:
    """Every display block and inline span of a Markdown document, and the lines that break
    the documents' conventions (each with the reason)."""
    lines = text.split("\n")
    items: list[Math] = []
    broken: list[str] = []
    fence: str | None = None
    comment = False
    n = 0
    while n < len(lines):
        raw = lines[n]
        line = raw.strip()
        n += 1
        if fence is not None:
            fence = None if line.startswith(fence) else fence
            continue
        if comment:
            comment = "-->" not in raw
            continue
        opens = re.match(r"(```+|~~~+)", line)
        if opens:
            fence = opens.group(1)
            continue
        if line.startswith("<!--"):
            comment = "-->" not in raw
            continue
        if line == "$$":
            start, body = n, []
            while n < len(lines) and lines[n].strip() != "$$":
                body.append(lines[n])
                n += 1
            if n >= len(lines):
                broken.append(f"line {start}: unclosed $$ block")
                break
            n += 1
            source = "\n".join(body)
            if "$" in source:
                broken.append(f"line {start}: a $ inside a $$ block")
            else:
                items.append(Math(start, True, source))
            continue
        plain = _without_code(raw)
        if "$" not in plain:
            continue
        where = f"line {n}: "
        if "\\$" in plain:
            broken.append(where + "\\$ is not used in these documents: " + raw)
            continue
        if "$$" in plain:
            broken.append(where + "$$ that is not on a line of its own: " + raw)
            continue
        parts = plain.split("$")
        if len(parts) % 2 == 0:
            broken.append(where + "an odd number of $ on the line: " + raw)
            continue
        for source in parts[1::2]:
            if not source or source[0].isspace() or source[-1].isspace():
                broken.append(where + f"a space next to the $ of inline math: ${source}$")
            elif line.startswith("|") and "|" in source:
                broken.append(where + f"a | inside inline math in a table row: ${source}$")
            else:
                items.append(Math(n, False, source))
    return items, broken


# --- the macro whitelist (the check that needs neither node nor KaTeX) --------------------

# Control words KaTeX supports, as the documents use them or may: letters, operators, fonts,
# delimiters, spacing.  Nothing KaTeX lacks belongs here (test_whitelist_is_known_to_katex):
# e.g. \label, \eqref and \ref are not KaTeX macros.
MACROS = frozenset(
    """
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu
    xi pi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma
    Phi Psi Omega
    cdot times div pm mp odot otimes oplus circ ast star bullet setminus cup cap wedge vee
    le leq ge geq ne neq approx equiv sim simeq propto in notin subset subseteq ll gg mid
    to mapsto gets leftarrow rightarrow Leftarrow Rightarrow leftrightarrow Leftrightarrow
    longrightarrow longleftarrow implies iff uparrow downarrow
    sum prod int partial nabla infty lim max min sup inf arg det exp log ln sin cos tan sinh
    cosh tanh arcsin arccos arctan
    mathbb mathbf mathrm mathcal mathit mathsf mathtt boldsymbol text textbf textit texttt
    textrm operatorname
    hat widehat bar overline underline tilde widetilde vec dot ddot
    frac dfrac tfrac sqrt binom left right middle big Big bigg Bigg bigl bigr Bigl Bigr
    underbrace overbrace underset overset stackrel tag notag nonumber begin end
    quad qquad enspace hspace phantom displaystyle textstyle scriptstyle limits nolimits
    lVert rVert lvert rvert Vert vert langle rangle lbrace rbrace lfloor rfloor lceil rceil
    ldots cdots vdots ddots dots top intercal prime ell hbar forall exists neg emptyset colon
    """.split()
)
# Control symbols: \\ (new row), spacing \, \; \: \! and "\ ", escaped \{ \} \| \_ \# \% \&.
SYMBOLS = frozenset(["\\", ",", ";", ":", "!", " ", "{", "}", "|", "_", "#", "%", "&"])
ENVIRONMENTS = frozenset(
    "aligned alignedat gathered matrix pmatrix bmatrix Bmatrix vmatrix Vmatrix smallmatrix "
    "cases array".split()
)
_CONTROL = re.compile(r"\\([A-Za-z]+|.)", re.DOTALL)
_ENVIRONMENT = re.compile(r"\\(?:begin|end)\s*\{([^}]*)\}")


def not_whitelisted(source: str) -> list[str]:
    """The macros and environments of one math source that are not on the whitelist."""
    unknown = [
        f"\\{name}"
        for name in _CONTROL.findall(source)
        if name not in (MACROS if name[0].isalpha() else SYMBOLS)
    ]
    unknown += [f"{{{env}}}" for env in _ENVIRONMENT.findall(source) if env not in ENVIRONMENTS]
    return unknown


def whitelist_failures(name: str, text: str) -> list[str]:
    items, broken = markdown_math(text)
    out = [f"{name}: {b}" for b in broken]
    for item in items:
        unknown = not_whitelisted(item.source)
        if unknown:
            out.append(f"{name}: line {item.line}: {', '.join(unknown)} in {item.source!r}")
    return out


# --- KaTeX through node -------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI installs node and katex (.ci/run), but {reason}")
    pytest.skip(f"{reason}; the macro whitelist check ran in its place")


def _katex() -> tuple[str, Path]:
    """node, and the folder of the katex package."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    folder = Path(os.environ.get("KATEX_DIR", DEFAULT_KATEX_DIR))
    if not (folder / "package.json").is_file():
        _unavailable(f"katex is not installed at {folder} (npm install --prefix .node katex)")
    return str(node), folder


def run_katex(files: list[Path]) -> dict:
    """tests/katex_check.js's report on the Markdown files."""
    node, folder = _katex()
    env = {**os.environ, "KATEX_DIR": str(folder)}
    proc = subprocess.run(
        [node, str(KATEX_SCRIPT), *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert (proc.returncode == 1) == bool(report["failures"])
    return report


def _katex_failures(report: dict, documents: dict[Path, Document]) -> str:
    shown = []
    for f in report["failures"]:
        doc = documents[Path(f["file"])]
        shown.append(
            f"{doc.name} line {f['line']}: {f['error']}\n  source: {f['source']!r}\n"
            f"  spec:\n{doc.spec_text}"
        )
    return f"KaTeX {report['katex']}: {len(shown)} failures\n" + "\n".join(shown)


def _write(folder: Path, docs: list[Document]) -> dict[Path, Document]:
    paths = {}
    for doc in docs:
        path = folder / f"{doc.name}.md"
        path.write_text(doc.md, encoding="utf-8")
        paths[path] = doc
    return paths


def _check_with_katex(folder: Path, docs: list[Document]) -> None:
    paths = _write(folder, docs)
    report = run_katex(list(paths))
    assert not report["failures"], _katex_failures(report, paths)
    expected = sum(len(markdown_math(doc.md)[0]) for doc in docs)
    assert report["count"] == expected > 0, (report["count"], expected)


def test_markdown_math_of_the_golden_documents_renders_with_katex() -> None:
    files = sorted((ROOT / "generated").glob("*.md"))
    assert {f.stem for f in files} == set(bundled_examples())
    report = run_katex(files)
    assert not report["failures"], json.dumps(report["failures"], indent=1)
    # the two extractors agree: the script's count is the Python parser's
    assert report["count"] == sum(
        len(markdown_math(f.read_text(encoding="utf-8"))[0]) for f in files
    )


def test_markdown_math_of_random_specs_renders_with_katex(tmp_path: Path) -> None:
    _check_with_katex(tmp_path, [_random_document(s) for s in default_specs()])


@pytest.mark.slow
def test_markdown_math_of_more_random_specs_renders_with_katex(tmp_path: Path) -> None:
    _check_with_katex(tmp_path, [_random_document(s) for s in slow_specs()])


CONTROL = "A $\\foo$ and $x^2$ here.\n\n$$\n\\foo + \\frac{1}{2}\n$$\n"


def test_katex_reports_an_unknown_macro(tmp_path: Path) -> None:
    path = tmp_path / "control.md"
    path.write_text(CONTROL, encoding="utf-8")
    report = run_katex([path])
    assert report["count"] == 3 and report["display"] == 1
    assert [(f["line"], f["source"]) for f in report["failures"]] == [
        (1, "\\foo"),
        (3, "\\foo + \\frac{1}{2}"),
    ]
    assert all("Undefined control sequence" in f["error"] for f in report["failures"])


def test_katex_script_reports_broken_conventions(tmp_path: Path) -> None:
    text = "a $ x$ b\nc $$y$$ d\ne $z\n| $|w|$ | 1 |\n`$code$` and $v$\n\n$$\nu\n"
    path = tmp_path / "broken.md"
    path.write_text(text, encoding="utf-8")
    report = run_katex([path])
    assert [f["line"] for f in report["failures"]] == [1, 2, 3, 4, 7]
    assert report["count"] == 1  # $v$ only: code spans are not math
    items, broken = markdown_math(text)
    assert [i.source for i in items] == ["v"]
    assert [b.split(":")[0] for b in broken] == [f"line {k}" for k in (1, 2, 3, 4, 7)]


def test_missing_katex_is_a_skip_and_under_ci_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Never a silent pass: without KaTeX its tests skip (the whitelist check runs in any
    case), and under CI, which installs it, they fail."""
    monkeypatch.setenv("KATEX_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="katex is not installed"):
        run_katex([tmp_path / "any.md"])
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI installs node and katex"):
        run_katex([tmp_path / "any.md"])
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(pytest.fail.Exception, match="node is not installed"):
        run_katex([tmp_path / "any.md"])


def test_whitelist_is_known_to_katex(tmp_path: Path) -> None:
    """Every whitelisted name is defined in KaTeX (arguments it wants aside); the control
    \\foo is not."""
    blocks = [f"\\{m}{{x}}{{y}}" for m in sorted(MACROS - {"begin", "end"} | {"foo"})]
    blocks += [f"x \\{s} y" for s in sorted(SYMBOLS - {"{", "}", "&", "\\"})]
    blocks += [f"\\begin{{{e}}}{{c}}x\\end{{{e}}}" for e in sorted(ENVIRONMENTS)]
    path = tmp_path / "whitelist.md"
    path.write_text("".join(f"$$\n{b}\n$$\n\n" for b in blocks), encoding="utf-8")
    report = run_katex([path])
    assert report["count"] == len(blocks)
    undefined = [
        f["source"]
        for f in report["failures"]
        if "Undefined control sequence" in f["error"] or "No such environment" in f["error"]
    ]
    assert undefined == ["\\foo{x}{y}"], undefined


# --- the whitelist check (always runs) ----------------------------------------------------


def test_whitelist_check_rejects_an_unknown_macro() -> None:
    assert whitelist_failures("control", CONTROL) == [
        "control: line 1: \\foo in '\\\\foo'",
        "control: line 3: \\foo in '\\\\foo + \\\\frac{1}{2}'",
    ]
    assert not_whitelisted(r"\begin{foo} x \end{foo} \label{a}") == [
        "\\label",
        "{foo}",
        "{foo}",
    ]
    assert not_whitelisted(r"\begin{aligned} a &= \frac{1}{2} \\ b \end{aligned}") == []


def test_markdown_math_of_the_golden_documents_is_whitelisted() -> None:
    failures = [
        problem
        for path in sorted((ROOT / "generated").glob("*.md"))
        for problem in whitelist_failures(path.name, path.read_text(encoding="utf-8"))
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("spec", _spec_ids(default_specs()))
def test_markdown_math_of_random_specs_is_whitelisted(spec: RandomSpec) -> None:
    doc = _random_document(spec)
    failures = whitelist_failures(doc.name, doc.md)
    assert not failures, "\n".join(failures) + "\nspec:\n" + doc.spec_text


@pytest.mark.slow
@pytest.mark.parametrize("spec", _spec_ids(slow_specs()))
def test_markdown_math_of_more_random_specs_is_whitelisted(spec: RandomSpec) -> None:
    test_markdown_math_of_random_specs_is_whitelisted(spec)


# --- PDF: zero warnings -------------------------------------------------------------------

# "LaTeX Warning:", "Package hyperref Warning:", "LaTeX Font Warning:", "pdfTeX warning (ext4)";
# not the names of packages that provide warnings (hyperref loads "infwarerr")
_PROBLEM = re.compile(
    r"[Ww]arning(?::| \()|(?:Overfull|Underfull) \\[hv]box|Missing character|Rerun to get"
)
_RERUN = re.compile(r"Rerun to get|Label\(s\) may have changed|rerunfilecheck Warning")


class CompileError(Exception):
    """pdflatex stopped: its first errors and the .tex line it stopped at."""

    def __init__(self, log: str) -> None:
        self.errors = [line for line in log.splitlines() if line.startswith("!")][:3]
        found = re.search(r"^l\.(\d+) ", log, re.MULTILINE)
        self.line = int(found.group(1)) if found else 0
        super().__init__(f"pdflatex failed at line {self.line}: {self.errors or log[-2000:]}")


def compile_tex(tex: str, folder: Path) -> tuple[Path, str, int]:
    """pdflatex until the log asks for no rerun, at least twice: the PDF, the last log and
    the number of runs.  Log lines are not wrapped (max_print_line)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is required under CI (install texlive-latex-base)")
        pytest.skip("pdflatex is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "doc.tex"
    path.write_text(tex, encoding="utf-8")
    env = {**os.environ, "max_print_line": "100000", "SOURCE_DATE_EPOCH": "0"}
    for runs in range(1, MAX_RUNS + 1):
        proc = subprocess.run(
            [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", path.name],
            cwd=folder,
            capture_output=True,
            timeout=300,
            env=env,
            check=False,
        )
        log = path.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            raise CompileError(log)
        if runs >= 2 and not _RERUN.search(log):
            break
    return path.with_suffix(".pdf"), log, runs


def log_problems(log: str) -> list[str]:
    """Every warning, bad box and missing character of a pdflatex log, a box's with the
    material that follows it."""
    lines = log.splitlines()
    out = []
    for i, line in enumerate(lines):
        if _PROBLEM.search(line):
            material = lines[i + 1].strip()[:160] if i + 1 < len(lines) else ""
            out.append(f"{line}\n      {material}" if "full \\" in line else line)
    return out


def _alignment_split(row: str) -> tuple[str, str]:
    """An align row's text left and right of its alignment point: the first ``&`` outside
    braces and environments (a pmatrix's ``&`` are inside one)."""
    depth = 0  # braces and environments
    for found in re.finditer(r"\\(?:begin|end)\{[^}]*\}|\\.|[{}&]", row):
        token = found.group()
        if token.startswith("\\begin{") or token == "{":
            depth += 1
        elif token.startswith("\\end{") or token == "}":
            depth -= 1
        elif token == "&" and depth == 0:
            return row[: found.start()], row[found.end() :]
    return "", row


def _align_rows(tex: str, end: int) -> list[tuple[str, str, str]]:
    """(tag, left, right) of every row of the align environment that ends at line ``end``."""
    lines = tex.splitlines()
    if not 0 < end <= len(lines) or not lines[end - 1].startswith("\\end{align}"):
        return []
    start = max(i for i in range(end - 1) if lines[i].startswith("\\begin{align}"))
    rows = []
    for line in lines[start + 1 : end - 1]:
        if not line.strip():
            continue
        tag = re.search(r"\\tag\{([^}]*)\}", line)
        body = re.sub(r"\s*(\\tag\{[^}]*\}|\\notag)\s*(\\\\)?\s*$", "", line)
        rows.append((tag.group(1) if tag else "", *_alignment_split(body)))
    return rows


def measure_rows(tex: str, end: int, folder: Path) -> str:
    """Which rows of the align environment ending at line ``end`` are too wide: each row's
    left and right parts typeset alone in the document's own preamble.  An align is as wide
    as its widest left part plus its widest right part (and a tag): that sum is shown too."""
    rows = _align_rows(tex, end)
    if not rows:
        return ""
    preamble = tex[: tex.index("\\begin{document}")]
    body = ["\\begin{document}", "\\typeout{WIDTH TEXT \\the\\textwidth}"]
    for k, (_, left, right) in enumerate(rows):
        body.append(f"\\setbox0\\hbox{{$\\displaystyle {left}$}}\\typeout{{WIDTH L{k} \\the\\wd0}}")
        body.append(
            f"\\setbox0\\hbox{{$\\displaystyle {{}}{right}$}}\\typeout{{WIDTH R{k} \\the\\wd0}}"
        )
    body.append("\\end{document}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rows{end}.tex"
    path.write_text(preamble + "\n".join(body) + "\n", encoding="utf-8")
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", path.name],
        cwd=folder,
        capture_output=True,
        timeout=300,
        env={**os.environ, "max_print_line": "100000"},
        check=False,
    )
    log = path.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    width = dict(re.findall(r"^WIDTH (\w+) ([0-9.]+)pt$", log, re.MULTILINE))
    if "TEXT" not in width or len(width) != 1 + 2 * len(rows):
        return "      (the rows could not be measured)"
    text = float(width["TEXT"])
    lefts = [float(width[f"L{k}"]) for k in range(len(rows))]
    rights = [float(width[f"R{k}"]) for k in range(len(rows))]
    out = [
        f"      align at lines {end - len(rows) - 1}--{end}: widest left {max(lefts):.1f}pt + "
        f"widest right {max(rights):.1f}pt = {max(lefts) + max(rights):.1f}pt "
        f"(text width {text:.1f}pt)"
    ]
    for (tag, left, right), lw, rw in zip(rows, lefts, rights, strict=True):
        if lw + rw > text - 40 or rw == max(rights) or lw == max(lefts):
            out.append(
                f"      ({tag or '-'}) {lw:.1f}pt + {rw:.1f}pt: {(left + '&' + right)[:300]}"
            )
    return "\n".join(out)


def explain(tex: str, problem: str, folder: Path) -> str:
    """The .tex a problem's "at lines a--b" / "at line a" points to; for a display, the
    measured widths of its rows."""
    found = re.search(r"at lines? (\d+)(?:--(\d+))?", problem)
    if not found:
        return ""
    first, last = int(found.group(1)), int(found.group(2) or found.group(1))
    measured = measure_rows(tex, last, folder)
    if measured:
        return measured
    lines = tex.splitlines()
    return "\n".join(f"      {k}: {lines[k - 1][:300]}" for k in range(first, last + 1))


@functools.cache
def _compiled(doc: Document, folder: Path) -> tuple[Path, str, int]:
    return compile_tex(doc.tex, folder / doc.name)


@pytest.fixture(scope="module")
def pdf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes_pdf")


def _failed(name: str, tex: str, spec_text: str, error: CompileError) -> str:
    rows = _align_rows(tex, error.line)
    shown = [f"({tag or '-'}) {(left + '&' + right)[:300]}" for tag, left, right in rows]
    if not rows and 0 < error.line <= len(tex.splitlines()):
        shown = [tex.splitlines()[error.line - 1][:300]]
    return f"{name}: {error}\n" + "".join(f"      {row}\n" for row in shown) + f"spec:\n{spec_text}"


def _assert_clean_pdf(doc: Document, folder: Path) -> Path:
    try:
        pdf, log, runs = _compiled(doc, folder)
    except CompileError as error:
        stopped = _failed(doc.name, doc.tex, doc.spec_text, error)
    else:
        stopped = ""
    if stopped:  # failed outside the except clause: no chained traceback
        pytest.fail(stopped)
    problems = log_problems(log)
    assert not problems, (
        f"{doc.name}: pdflatex ({runs} runs) logged {len(problems)} problems:\n"
        + "\n".join(f"  {p}\n{explain(doc.tex, p, folder / 'rows' / doc.name)}" for p in problems)
        + f"\nspec:\n{doc.spec_text}"
    )
    assert pdf.read_bytes().startswith(b"%PDF")
    return pdf


@pytest.mark.parametrize("name", sorted(bundled_examples()))
def test_pdf_of_bundled_example_has_no_warnings(name: str, pdf_folder: Path) -> None:
    _assert_clean_pdf(bundled(name), pdf_folder)


@pytest.mark.parametrize("spec", _spec_ids(default_specs()))
def test_pdf_of_random_spec_has_no_warnings(spec: RandomSpec, pdf_folder: Path) -> None:
    _assert_clean_pdf(_random_document(spec), pdf_folder)


@pytest.mark.slow
@pytest.mark.parametrize("spec", _spec_ids(slow_specs()))
def test_pdf_of_more_random_specs_has_no_warnings(spec: RandomSpec, pdf_folder: Path) -> None:
    _assert_clean_pdf(_random_document(spec), pdf_folder)


def test_log_check_finds_every_kind_of_problem(tmp_path: Path) -> None:
    """A control: a document with an overfull and an underfull box, a LaTeX warning (an
    undefined reference) and a missing character."""
    tex = (
        "\\documentclass{article}\\begin{document}\n"
        "\\hbox to 2in{\\hbox to 3in{}}\n"  # overfull
        "\\vbox to 1in{\\hbox{x}}\n"  # underfull
        "see \\ref{nowhere}\n"
        "\\char200\n"  # cmr10 has no character 200
        "\\end{document}\n"
    )
    _, log, runs = compile_tex(tex, tmp_path)
    problems = log_problems(log)
    assert runs >= 2
    for expected in (
        "Overfull \\hbox",
        "Underfull \\vbox",
        "LaTeX Warning: Reference",
        "Missing character",
    ):
        assert any(expected in p for p in problems), (expected, problems)


def test_a_stopped_compilation_names_its_line_and_rows(tmp_path: Path) -> None:
    """A control: amsmath's pmatrix takes at most 10 columns; the failure shows the rows."""
    row = " & ".join("1" for _ in range(11))
    tex = (
        "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
        f"\\begin{{align}}\nW & = \\begin{{pmatrix}} {row} \\end{{pmatrix}} \\tag{{1.1}}\n"
        "\\end{align}\n\\end{document}\n"
    )
    with pytest.raises(CompileError) as stopped:
        compile_tex(tex, tmp_path)
    assert stopped.value.line == 6
    assert stopped.value.errors[0] == "! Extra alignment tab has been changed to \\cr."
    shown = _failed("control", tex, "spec text", stopped.value)
    assert "(1.1) W & = \\begin{pmatrix} 1 & 1" in shown


def test_seed_mlp_pdf_text_has_its_section_titles(pdf_folder: Path) -> None:
    exe = shutil.which("pdftotext")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs poppler-utils (pdftotext)")
        pytest.skip("pdftotext is not installed")
    doc = bundled("seed_mlp")
    pdf, _, _ = _compiled(doc, pdf_folder)
    text = subprocess.run(
        [exe, "-layout", "-enc", "UTF-8", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = " ".join(text.split())
    titles = re.findall(r"^## (\d+)\. (.+)$", doc.md, re.MULTILINE)
    assert len(titles) >= 8, titles
    for number, title in titles:
        # the words of the title outside its math (whose glyphs differ in the PDF), the first
        # run of them after the section's number
        runs = [" ".join(r.split()) for r in re.split(r"\$[^$]*\$", title.replace("`", ""))]
        runs = [r for r in runs if r]
        assert f"{number} {runs[0]}" in flat, (number, runs[0])
        assert all(r in flat for r in runs[1:]), (number, runs)


# --- the random specs themselves ----------------------------------------------------------


def _coverage(specs: tuple[RandomSpec, ...]) -> dict[str, set]:
    seen: dict[str, set] = {
        "activations": set(),
        "losses": set(),
        "pairs": set(),
        "kinds": set(),
        "depths": set(),
        "widths": set(),
        "views": set(),
    }
    for random_spec in specs:
        spec = random_spec.spec()
        activations, loss = resolve(spec)
        seen["activations"] |= {a.name for a in activations if a is not None}
        seen["losses"].add(loss.name)
        output = activations[spec.output_layer.index - 1]
        seen["pairs"].add((output.name if output else None, loss.name))
        seen["kinds"] |= {layer.kind for layer in spec.flat}
        dense = [layer for layer in spec.flat if layer.kind == "dense"]
        seen["depths"].add(len([layer for layer in spec.layers if layer.kind == "dense"]))
        seen["widths"] |= {spec.inputs, *(layer.units for layer in dense)}
        small = spec.plain and spec.parameter_count <= EXPANDED_LIMIT
        seen["views"].add("neurons" if small else "matrices")
    return seen


@pytest.mark.parametrize("which", ["default", "slow"])
def test_random_specs_cover_every_activation_and_loss(which: str) -> None:
    specs = default_specs() if which == "default" else slow_specs()
    seen = _coverage(specs)
    assert set(ACTIVATIONS) <= seen["activations"], set(ACTIVATIONS) - seen["activations"]
    for name in ACTIVATION_PARAMETERS:  # with a parameter other than its default
        assert any(a.startswith(f"{name}(") for a in seen["activations"]), name
    assert {n for n, _ in CUSTOM_ACTIVATIONS} <= seen["activations"]
    assert set(LOSSES) | {n for n, _ in CUSTOM_LOSSES} <= seen["losses"]
    assert {
        ("softmax", "cross_entropy"),
        ("sigmoid", "cross_entropy"),
        ("sigmoid", "binary_cross_entropy"),
    } <= seen["pairs"]
    assert min(seen["depths"]) == 1 and max(seen["depths"]) == MAX_DEPTH
    assert min(seen["widths"]) >= 1 and max(seen["widths"]) <= MAX_WIDTH
    assert seen["views"] == {"neurons", "matrices"}
    assert len(seen["kinds"]) > 1  # a few specs with layers of other kinds
    if which == "slow":
        assert set(OTHER_KINDS) <= seen["kinds"]
        assert max(seen["widths"]) == MAX_WIDTH


def test_random_specs_are_the_same_on_every_run() -> None:
    """Seeded: the same specs on every machine (the sizes of the fast set, pinned)."""
    from notes_specs import random_specs

    assert random_specs(8, seed=2024, prefix="notes") == default_specs()
    assert [s.spec().sizes for s in default_specs()] == [
        (3, 2, 2, 1),
        (7, 2, 8, 1),
        (14, 4, 11, 8, 8, 15),
        (2, 3, 2, 2, 2),
        (7, 1, 1, 9),
        (9, 3, 5, 2, 9, 12),
        (2, 2, 1),
        (9, 1),
    ]
    assert len({s.toml for s in slow_specs()}) == len(slow_specs())
