"""Every relative link of README.md and of the pages of ``docs/`` leads somewhere: to a file or a
folder of the repository and, for ``page.md#anchor`` or ``#anchor``, to a heading of that page,
by GitHub's rule for a heading's anchor (lower case, spaces to ``-``, punctuation but ``-`` and
``_`` dropped; a repeated heading's anchor gets ``-1``, ``-2``, ...)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# [text](target): the text may hold one level of brackets, the target no space or parenthesis.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# A link's other forms: a reference's definition ([name]: target) and an HTML href or src.
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)", re.MULTILINE)
HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """``text`` without its fenced blocks (a link or a heading there is code, not markdown)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target not
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text).splitlines():
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, text: str) -> list[str]:
    """The relative links of ``text`` (the file at ``path``) that lead nowhere, each said with
    why."""
    broken = []
    for target in LINK.findall(prose(text)):
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:  # an anchor of this page
            if anchor not in anchors(text):
                broken.append(f"{path.name}: {target}: no heading of {path.name} has that anchor")
            continue
        where = (path.parent / file_part).resolve()
        if not where.exists():
            broken.append(f"{path.name}: {target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(
                where.read_text(encoding="utf-8")):
            broken.append(f"{path.name}: {target}: no heading of {where.name} has that anchor")
    return broken


def test_every_relative_link_and_anchor_of_the_docs_resolves() -> None:
    docs = documents()
    assert len(docs) > 10, docs  # README.md and the pages of docs/
    broken = [problem for path in docs
              for problem in broken_links(path, path.read_text(encoding="utf-8"))]
    assert broken == []


def test_a_link_to_a_missing_page_or_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "page.md").write_text(
        "# A page\n\n## Labels (`add-model`)\n\n## Labels (`add-model`)\n", encoding="utf-8")
    text = ("[ok](page.md#labels-add-model) [second](page.md#labels-add-model-1) [top](#top)\n"
            "[gone](nowhere.md) [no anchor](page.md#labels) [web](https://example.com/x#y)\n"
            "```sh\n[in code](missing.md)\n```\n# Top\n")
    assert broken_links(tmp_path / "index.md", text) == [
        "index.md: nowhere.md: no such file",
        "index.md: page.md#labels: no heading of page.md has that anchor"]


def pypi_description() -> tuple[str, str]:
    """The file pyproject.toml gives as the long description PyPI shows, and its text."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = project["readme"]
    name = readme if isinstance(readme, str) else readme["file"]
    return name, (ROOT / name).read_text(encoding="utf-8")


def unfollowable_links(text: str) -> list[str]:
    """The links of ``text`` a reader of it on PyPI cannot follow: every relative one (a
    page, an image, an anchor), since PyPI shows the text alone, with no repository beside it."""
    body = prose(text)
    targets = LINK.findall(body) + REFERENCE.findall(body) + HTML_LINK.findall(body)
    return [target for target in targets if not SCHEME.match(target)]


def test_the_pypi_description_has_no_link_a_pypi_reader_cannot_follow() -> None:
    name, text = pypi_description()
    assert unfollowable_links(text) == [], f"{name} (pyproject.toml's readme)"
    # It names the pages instead, as files of docs/, which the source distribution carries.
    named = set(re.findall(r"`(docs/[\w-]+\.md)`", text))
    assert named and sorted(n for n in named if not (ROOT / n).is_file()) == []
    assert "graft docs" in (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    # What switchpoint is, it says in README.md's words (its first paragraph), kept in step.
    first = (ROOT / "README.md").read_text(encoding="utf-8").split("\n\n")[1]
    assert first in text


def test_a_link_only_a_repository_resolves_is_found() -> None:
    text = ("[Gateway](docs/gateway.md) ![curve](docs/curve.png) [up](#top) [web](https://x.org)\n"
            "[ref]: docs/ref.md\n[site]: https://example.com/docs\n"
            '<a href="docs/a.md">a</a> <img src="https://example.com/i.png">\n'
            "```sh\n[in code](missing.md)\n```\n")
    assert unfollowable_links(text) == [
        "docs/gateway.md", "docs/curve.png", "#top", "docs/ref.md", "docs/a.md"]
    assert unfollowable_links((ROOT / "README.md").read_text(encoding="utf-8"))  # GitHub's page
