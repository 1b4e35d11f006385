"""The documents keep their promises: every test SECURITY.md names exists."""

from __future__ import annotations

import re

from tests.conftest import ROOT

_NAMED = re.compile(r"`(?:(test_[a-z_]+\.py)(?:::(test_\w+))?|(test_\w+))`")


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) for each test a SECURITY.md table row names; a bare name is in the file
    named before it in the same cell."""
    found = []
    for row in text.splitlines():
        if not row.startswith("|"):
            continue
        for cell in row.split("|"):
            current = None
            for match in _NAMED.finditer(cell):
                if match[1]:
                    current = match[1]
                name = match[2] or match[3]
                if current and name:
                    found.append((current, name))
    return found


def test_every_test_security_md_names_exists():
    """A defence whose test was renamed or removed would be a claim without proof."""
    named = named_tests((ROOT / "SECURITY.md").read_text())
    assert len(named) > 50
    sources = {path.name: path.read_text() for path in (ROOT / "tests").glob("*.py")}
    defined = {name for text in sources.values() for name in re.findall(r"def (test_\w+)\(", text)}
    # A test runs in a file that defines it, or that imports a shared one (tests/proxy_battery).
    missing = [
        f"{file}::{name}"
        for file, name in named
        if name not in defined or not re.search(rf"\b{name}\b", sources.get(file, ""))
    ]
    assert missing == []
