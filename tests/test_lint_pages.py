"""The lint output shown on the rule pages is what lint prints today.

A page shows an output block as ```` ```text lint <example> ````, where ``<example>`` names
the fenced example it came from (``nginx bad``, ``yaml bad 2``, ``nginx 1``: the n-th block
of that kind, 1 when omitted). The test lints that example, saved as ``nginx.conf`` (or
``ingress-nginx.yaml``) in an empty folder, and compares. After changing lint's messages:

    .venv/bin/python tests/test_lint_pages.py --write
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "lint"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
RETRYWATCH = [sys.executable, "-m", "retrywatch"]


def example(text: str, spec: str) -> tuple[str, str]:
    """(file name, body) of the example ``spec`` (e.g. ``yaml bad 2``) of a page."""
    words = spec.split()
    n = int(words.pop()) if words[-1].isdigit() else 1
    kind = " ".join(words)
    found = [m.group(2) for m in FENCE.finditer(text) if m.group(1).strip() == kind]
    assert len(found) >= n, f"no {n}th `{kind}` block"
    name = "ingress-nginx.yaml" if kind.startswith("yaml") else "nginx.conf"
    return name, found[n - 1]


def lint_output(name: str, body: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, name).write_text(body, encoding="utf-8")
        done = subprocess.run([*RETRYWATCH, "lint", name], cwd=folder, capture_output=True,
                              text=True, timeout=60, check=False)
    return (done.stdout + done.stderr).rstrip("\n") + "\n"


def output_blocks(text: str) -> list[tuple[str, str, re.Match[str]]]:
    return [(m.group(1).strip()[len("text lint "):], m.group(2), m)
            for m in FENCE.finditer(text) if m.group(1).strip().startswith("text lint ")]


CASES = [pytest.param(page, spec, id=f"{page.stem}-{spec}")
         for page in sorted(DOCS.glob("*.md"))
         for spec, _body, _m in output_blocks(page.read_text(encoding="utf-8"))]


def test_pages_show_lint_output() -> None:
    assert len(CASES) >= 5  # the rule pages each show what lint says


@pytest.mark.parametrize(("page", "spec"), CASES)
def test_shown_output_is_current(page: Path, spec: str) -> None:
    text = page.read_text(encoding="utf-8")
    (shown,) = [body for s, body, _m in output_blocks(text) if s == spec]
    assert shown == lint_output(*example(text, spec)), (
        f"{page.name}: the `{spec}` output changed; run "
        "`.venv/bin/python tests/test_lint_pages.py --write`")


def write() -> None:
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for spec, body, m in reversed(output_blocks(text)):
            start, end = m.span(2)
            fresh = lint_output(*example(text, spec))
            if fresh != body:
                text = text[:start] + fresh + text[end:]
                print(f"{page.name}: {spec} updated")
        page.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
