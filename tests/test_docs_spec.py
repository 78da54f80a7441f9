"""docs/spec.md is the contract code and tests cite: the citations must hold.

- Every ``docs/spec.md §N`` (also ``§N, §M``) in src/, tests/, docs/ and README.md names
  a numbered section of docs/spec.md, and every citation by title
  (``docs/spec.md, "Matrix products"``) names the start of a section title.
- The sections are numbered 1, 2, 3... in order, so a number cited today keeps its
  meaning; the page's own cross-references ``§N`` exist too.
- No file in src/ cites the steering document outside the repository (``SPEC``,
  ``SPEC.md``) or the course texts it was written from: the repository's own contract
  is docs/spec.md. Failures list file:line.
"""

import os
import re

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
SPEC_PAGE = os.path.join(ROOT, "docs", "spec.md")
TEXT_EXTENSIONS = (".py", ".pyx", ".pxd", ".h", ".md", ".rst", ".txt", ".toml", ".cfg")
SOURCE_EXTENSIONS = (".py", ".pyx", ".pxd", ".h")  # generated .c files are not sources
SKIP_DIRS = {"__pycache__", ".hypothesis", ".pytest_cache"}

# "docs/spec.md §5", "docs/spec.md §5, §7", "docs/spec.md §5 and §7" (a line break may
# fall anywhere in between).
NUMBERED = re.compile(r"docs/spec\.md((?:[\s,]*(?:and\s+)?§\s*\d+)+)")
TITLED = re.compile(r'docs/spec\.md,?\s*"([^"]+)"')
OUTSIDE = [
    (re.compile(r"\bSPEC\b"), "cites SPEC (the steering document outside the repository)"),
    (re.compile(r"\bseeds?\s+0\d\d\b", re.I), "cites a course text by number"),
    (re.compile(r"\bseeds'", re.I), "cites the course texts"),
    (re.compile(r"\bthe seed(?:'s| does)\b", re.I), "cites a course text"),
    (re.compile(r"\bseeds/|/work/shared\b"), "points at the course texts' directory"),
    (re.compile(r"\b\d{3}_[0-9a-f]{16}\.txt\b"), "names a course text's file"),
    (re.compile(r"\bcourse texts?\b", re.I), "cites the course texts"),
]


def _files(top, extensions):
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(filenames):
            if name.endswith(extensions):
                yield os.path.join(dirpath, name)


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _rel(path):
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


def _line(text, offset):
    return text.count("\n", 0, offset) + 1


def _sections():
    """{number: title} of the page's "## N. Title" headings, in page order."""
    found = re.findall(r"^## (\d+)\. (.+?)\s*$", _read(SPEC_PAGE), re.M)
    return [(int(n), title) for n, title in found]


def _citing_files():
    yield from _files("src", TEXT_EXTENSIONS)
    yield from _files("tests", TEXT_EXTENSIONS)
    for path in _files("docs", (".md",)):
        if os.path.normpath(path) != os.path.normpath(SPEC_PAGE):
            yield path
    yield os.path.join(ROOT, "README.md")


def test_sections_are_numbered_in_order():
    numbers = [n for n, _ in _sections()]
    assert numbers, "docs/spec.md has no '## N. Title' sections"
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_the_page_cross_references_its_own_sections():
    text = _read(SPEC_PAGE)
    numbers = {n for n, _ in _sections()}
    bad = [
        f"docs/spec.md:{_line(text, m.start())}: §{m.group(1)}"
        for m in re.finditer(r"§\s*(\d+)", text)
        if int(m.group(1)) not in numbers
    ]
    assert not bad, "sections that do not exist:\n" + "\n".join(bad)


def test_every_citation_names_an_existing_section():
    sections = _sections()
    numbers = {n for n, _ in sections}
    titles = [title.lower() for _, title in sections]
    bad, seen = [], 0
    for path in _citing_files():
        text = _read(path)
        for m in NUMBERED.finditer(text):
            for n in re.findall(r"\d+", m.group(1)):
                seen += 1
                if int(n) not in numbers:
                    bad.append(
                        f"{_rel(path)}:{_line(text, m.start())}: §{n} "
                        f"(docs/spec.md has §1-§{max(numbers)})"
                    )
        for m in TITLED.finditer(text):
            seen += 1
            cited = " ".join(m.group(1).split()).lower()
            if not any(title.startswith(cited) for title in titles):
                bad.append(
                    f"{_rel(path)}:{_line(text, m.start())}: no section titled {m.group(1)!r}"
                )
    assert seen, "no citation of docs/spec.md found: the scan is broken"
    assert not bad, "citations of missing sections:\n" + "\n".join(bad)


def _outside_citations():
    """(rel path, line number, line, reason) of every citation of the outside texts."""
    for path in _files("src", SOURCE_EXTENSIONS):
        for i, line in enumerate(_read(path).splitlines(), 1):
            for pattern, reason in OUTSIDE:
                if pattern.search(line):
                    yield _rel(path), i, line.strip(), reason
                    break


def test_src_cites_docs_spec_not_the_outside_texts():
    bad = [f"{path}:{i}: {reason}: {line}" for path, i, line, reason in _outside_citations()]
    assert not bad, (
        "cite docs/spec.md §N instead of the texts outside the repository:\n" + "\n".join(bad)
    )


@pytest.mark.parametrize("pattern,reason", OUTSIDE)
def test_patterns_catch_what_they_are_for(pattern, reason):
    examples = {
        "cites SPEC (the steering document outside the repository)": "see SPEC.md",
        "cites a course text by number": "as Seed 002 does",
        "cites the course texts": (
            "the seeds' experiments" if "'" in pattern.pattern else "the course texts"
        ),
        "cites a course text": "generated as the seed does",
        "points at the course texts' directory": "in seeds/ beside it",
        "names a course text's file": "000_fc259c190a6dd655.txt",
    }
    assert pattern.search(examples[reason])
    # random seeds are not citations
    assert not pattern.search("random_state seeds the streams; only integer seeds are kept")
