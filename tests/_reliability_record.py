"""What the reliability tests tried and what came out, for docs/reliability.md.

Every fuzz or fault test calls :func:`record` once with a stable ``key``, the number
of cases it ran and the outcome it asserted. Two things happen:

- with ``FASTNN_RELIABILITY_JSON=<file>`` in the environment (set by
  ``tools/reliability_report.py``), the record is appended to that file as one JSON
  line; the script turns the lines into the table of docs/reliability.md;
- always, the record is compared with the row of that table that has the same key:
  the area, what was tried, the number of cases and the outcome must be the
  documented ones. A test changed without regenerating the table fails here, so the
  table always matches what the tests do. ``breakdown`` (how the cases split, e.g.
  between inputs that worked and inputs refused) is informational and not compared.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
REGENERATE = "regenerate it with `python tools/reliability_report.py`"

_ROW = re.compile(r"^\|\s*`(?P<key>[\w.-]+)`\s*\|(?P<rest>.*)\|\s*$")


def documented() -> dict[str, list[str]]:
    """key -> [area, what, cases, outcome, breakdown] from the table of the doc."""
    rows = {}
    if not DOC.exists():
        return rows
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            rows[m["key"]] = [c.strip() for c in m["rest"].split("|")]
    return rows


def _clean(text: str) -> str:
    return " ".join(str(text).replace("|", "/").split())


def record(key: str, area: str, what: str, cases: int, outcome: str, breakdown: str = "") -> None:
    """Record one row; fail when docs/reliability.md documents it differently."""
    entry = {
        "key": key,
        "area": _clean(area),
        "what": _clean(what),
        "cases": int(cases),
        "outcome": _clean(outcome),
        "breakdown": _clean(breakdown),
    }
    out = os.environ.get("FASTNN_RELIABILITY_JSON")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        return  # the table is being regenerated from these records
    row = documented().get(key)
    assert row is not None, f"docs/reliability.md has no row {key!r}; {REGENERATE}"
    want = [entry["area"], entry["what"], str(entry["cases"]), entry["outcome"]]
    assert row[:4] == want, (
        f"docs/reliability.md row {key!r} says {row[:4]}, the test did {want}; {REGENERATE}"
    )


# node id -> "passed" / "failed" / "skipped", filled by tests/conftest.py.
OUTCOMES: dict[str, str] = {}


def record_module_once_passed(
    request, key: str, area: str, what: str, cases: int, outcome: str, breakdown: str = ""
) -> None:
    """:func:`record`, from a module's last test, once every other test of the module
    ran in this session and passed (skipped otherwise: a partial run tried less than
    the row says)."""
    import pytest

    own = request.node.nodeid
    module = own.split("::")[0]
    others = [
        item.nodeid
        for item in request.session.items
        if item.nodeid.split("::")[0] == module and item.nodeid != own
    ]
    missing = [n for n in others if OUTCOMES.get(n) != "passed"]
    if missing:
        pytest.skip(
            f"{len(missing)} of {len(others)} tests of {module} did not run and "
            f"pass in this session (first: {missing[0]})"
        )
    record(key, area, what, cases, outcome, breakdown)
