"""The protocol documents live in the repository, and every pointer into them from the code names
a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = {name: ROOT / "docs" / name for name in ("protocol-v0.md", "protocol-v1.md")}

#: ``docs/protocol-v1.md, Merkle heartbeat`` or ``docs/protocol-v0.md "Timing"`` (the section may
#: be quoted, and may wrap onto the next line of a docstring or comment)
REFERENCE = re.compile(
    r"docs/(protocol-v[01]\.md)(?:,\s*|\s+)"
    r"(?:\"([^\"]+)\"|([A-Z][A-Za-z0-9/ \t-]*(?:\n[ \t]*#?[ \t]*[A-Za-z0-9/ -]+)?))"
)
#: what the repository must not point at: the reference documents outside it
FORBIDDEN = ("shared/spec", "§", "api-v0.md")
SCANNED = ("downstream_tx", "bench", "contrib", "docs")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".cfg", ".ini", ".sh", ".json", ".service",
                 ".tac", ".rules", ""}


def headings(doc: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{2,3} (.+)$", doc.read_text(), re.M)}


def references() -> list[tuple[Path, str, str]]:
    found = []
    for path in sorted((ROOT / "downstream_tx").rglob("*.py")):
        for m in REFERENCE.finditer(path.read_text()):
            section = m.group(2) or m.group(3)
            section = " ".join(re.sub(r"\n[ \t]*#?", " ", section).split())
            found.append((path, m.group(1), section))
    return found


def names(reference: str, heading: str) -> bool:
    """A reference names a heading: the whole heading, or its first words (``Status`` for
    ``Status API``)."""
    return heading == reference or heading.startswith(reference + " ")


def test_both_documents_exist_with_their_sections():
    for doc in DOCS.values():
        assert doc.is_file(), f"{doc.relative_to(ROOT)} is missing"
    assert {"What v0 proves", "Downloads", "Timing", "Downtime rule", "Hash challenges",
            "Error messages"} <= headings(DOCS["protocol-v0.md"])
    assert {"Expiry", "Downtime rule", "Merkle heartbeat", "RandomIO", "KeyedPRF", "Signatures", "Status API",
            "Error messages"} <= headings(DOCS["protocol-v1.md"])


def test_the_reference_pattern_reads_every_form():
    text = ('(docs/protocol-v1.md, Merkle heartbeat). docs/protocol-v0.md "Timing", '
            "(docs/protocol-v1.md,\n    Signatures), on top")
    found = [(m.group(1), m.group(2) or m.group(3)) for m in REFERENCE.finditer(text)]
    cleaned = [(doc, " ".join(re.sub(r"\n[ \t]*#?", " ", s).split())) for doc, s in found]
    assert cleaned == [("protocol-v1.md", "Merkle heartbeat"), ("protocol-v0.md", "Timing"),
                       ("protocol-v1.md", "Signatures")]


def test_code_points_at_sections_that_exist():
    refs = references()
    assert refs, "no module points into the protocol documents"
    bad = []
    for path, doc, section in refs:
        if not any(names(section, h) for h in headings(DOCS[doc])):
            bad.append(f"{path.relative_to(ROOT)}: docs/{doc}, {section!r}")
    assert not bad, "references to sections that do not exist:\n" + "\n".join(bad)


def _scanned_files():
    yield ROOT / "README.md"
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                yield path


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_nothing_points_outside_the_repository(needle):
    bad = []
    for path in _scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if needle in line:
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, f"{needle!r} found:\n" + "\n".join(bad)
