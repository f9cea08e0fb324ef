"""An nginx configuration as a tree: crossplane parses the files, this module splices each
``include`` in place (a file included in ten locations appears ten times, as nginx reads
it), keeps every directive's file and line, and answers the questions the rules ask:
which block encloses a directive, and what value a directive has there after nginx's
inheritance (http → server → location → nested location; stream → server).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crossplane
from crossplane.analyzer import analyze, enter_block_ctx
from crossplane.errors import NgxParserDirectiveError

from retrywatch.lint import lua

__all__ = ["Config", "Node", "Problem", "load"]

lua.register()

#: Blocks whose directives inherit into the blocks inside them (the merge chain).
_INHERITING = {"http", "stream", "server", "location"}
#: Top-level directives that make a file a whole configuration (not a snippet).
_MAIN = {"events", "http", "stream", "mail", "worker_processes", "user", "pid", "load_module"}
#: Include nesting beyond which a cycle is assumed (nginx itself has no limit).
_MAX_INCLUDE_DEPTH = 32
#: Directives in one configuration once its includes are spliced in, at most.
_MAX_NODES = 1_000_000


@dataclass(eq=False, slots=True)
class Node:
    """One directive; a block has children (includes already spliced in)."""

    name: str
    args: list[str]
    file: str
    line: int
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    included_from: Node | None = None  # the include directive that brought this file in
    _index: dict[str, list[Node]] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Node({self.name} {' '.join(self.args)!r} at {self.file}:{self.line})"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def all(self, name: str) -> list[Node]:
        """The children named ``name`` (indexed at the first question: the tree is built
        before it is asked anything, and an http block may hold thousands)."""
        if self._index is None:
            index: dict[str, list[Node]] = {}
            for child in self.children:
                index.setdefault(child.name, []).append(child)
            self._index = index
        return self._index.get(name, [])

    def last(self, name: str) -> Node | None:
        found = self.all(name)
        return found[-1] if found else None

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            yield from child.walk()

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def subsystem(self) -> str | None:
        """``http`` or ``stream`` (or ``mail``) for a directive inside one, else None."""
        for node in (self, *self.ancestors()):
            if node.name in ("http", "stream", "mail"):
                return node.name
        return None

    def effective(self, name: str) -> Node | None:
        """The directive ``name`` that applies here: set in this block or the nearest
        enclosing block of the inheritance chain (``if`` blocks are passed through)."""
        for node in (self, *self.ancestors()):
            if node.name in _INHERITING or node is self:
                found = node.last(name)
                if found is not None:
                    return found
            if node.name in ("http", "stream"):
                return None
        return None


@dataclass(slots=True, frozen=True)
class Problem:
    """A file that could not be read or parsed as it should."""

    file: str
    line: int | None
    message: str
    severity: str  # error: the file was not (fully) read; note: an include was not found


@dataclass(slots=True)
class Config:
    path: str
    root: Node  # a virtual block named "main" (or "http"/"stream" for a snippet)
    files: list[str]
    problems: list[Problem]

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path) or "."


def _is_snippet(path: str, parsed: list[dict[str, Any]]) -> str | None:
    """For a file with no main-context directive: the subsystem it belongs in."""
    names = {stmt["directive"] for stmt in parsed}
    if not parsed or names & _MAIN:
        return None
    if "stream" in Path(path).parts or any(
        stmt["directive"] == "server" and any(c["directive"] == "proxy_pass"
                                              for c in stmt.get("block", []))
        for stmt in parsed):
        return "stream"  # an http server cannot proxy_pass outside a location
    return "http"


def load(path: str, *, context: str | None = None) -> Config:
    """Parse ``path`` with its includes. ``context``: ``http`` or ``stream`` to read the
    file as the body of that block (a conf.d snippet); by default a file without any
    main-context directive is read as an http snippet (a stream one when its servers
    proxy_pass directly)."""
    problems: list[Problem] = []
    try:
        with open(path, "rb") as probe:
            probe.read(1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Config(path, Node("main", [], path, 0), [], [Problem(path, None, reason, "error")])
    if os.path.isdir(path):
        return Config(path, Node("main", [], path, 0), [],
                      [Problem(path, None, "is a directory", "error")])
    # one parse (the lexing is most of the time); the directives' contexts are checked
    # after, once it is known whether the file is a whole configuration or a snippet
    payload: dict[str, Any] = crossplane.parse(path, check_ctx=False, comments=False)
    snippet = context
    if snippet is None and payload["config"]:
        snippet = _is_snippet(path, payload["config"][0]["parsed"])
    if snippet is None:
        payload["errors"] += _context_errors(payload)
    for err in payload["errors"]:
        message = _clean(str(err["error"]), err["file"])
        missing = "No such file" in message or "Errno 2" in message
        problems.append(Problem(err["file"], err.get("line"), message,
                                "note" if missing else "error"))
    files = [c["file"] for c in payload["config"]]
    for file in files:
        problems += _glued_lua_blocks(file)
    root = Node(snippet or "main", [], path, 0)
    if payload["config"]:
        builder = _Builder(payload, problems)
        builder.build(root, payload["config"][0]["parsed"], (path,))
    return Config(path, root, files, problems)


def _context_errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """crossplane's "directive is not allowed here" checks over the parsed files, each
    included file in the context of its include."""
    errors: list[dict[str, Any]] = []
    files = payload["config"]
    queue: list[tuple[int, tuple[str, ...]]] = [(0, ())]
    done: set[int] = set()
    while queue:
        index, ctx = queue.pop()
        if index in done or index >= len(files):
            continue
        done.add(index)
        fname = files[index]["file"]
        stack: list[tuple[list[dict[str, Any]], tuple[str, ...]]] = [(files[index]["parsed"], ctx)]
        while stack:
            parsed, here = stack.pop()
            for stmt in parsed:
                term = "{" if "block" in stmt else ";"
                try:
                    analyze(fname, stmt, term, here, strict=False, check_ctx=True,
                            check_args=False)
                except NgxParserDirectiveError as exc:
                    errors.append({"file": fname, "error": str(exc), "line": stmt["line"]})
                    continue
                if "block" in stmt:
                    stack.append((stmt["block"], enter_block_ctx(stmt, here)))
                for included in stmt.get("includes", []):
                    queue.append((included, here))
    return errors


_GLUED = re.compile(rb"\b([a-z_]+_by_lua_block)\{")


def _glued_lua_blocks(file: str) -> list[Problem]:
    """``content_by_lua_block{`` (no space): nginx reads it, crossplane would read the Lua
    as nginx directives; said plainly instead of misread."""
    try:
        with open(file, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [Problem(file, data.count(b"\n", 0, m.start()) + 1,
                    f"write a space between {m.group(1).decode()} and {{: retrywatch lint "
                    "cannot read the Lua block otherwise", "error")
            for m in _GLUED.finditer(data)]


_WHERE = re.compile(r" in (?:None|\S+):\d+$")


def _clean(message: str, file: str) -> str:
    """crossplane's messages end with " in FILE:LINE"; the finding says where already."""
    at = message.rfind(f" in {file}")
    if at > 0:
        return message[:at]
    message = _WHERE.sub("", message)
    if message.startswith("[Errno"):
        return message.split("] ", 1)[-1]
    return message


class _Builder:
    """Splices the parsed files into one tree, each include at its site; a cycle is an
    error and the splice stops there; so does a tree past ``_MAX_NODES`` directives."""

    def __init__(self, payload: dict[str, Any], problems: list[Problem]) -> None:
        self.payload = payload
        self.problems = problems
        self.nodes = 0
        self.overflow = False

    def build(self, parent: Node, parsed: list[dict[str, Any]], chain: tuple[str, ...],
              via: Node | None = None) -> None:
        file = chain[-1]
        for stmt in parsed:
            if self.nodes >= _MAX_NODES:
                if not self.overflow:
                    self.overflow = True
                    self.problems.append(Problem(
                        file, int(stmt["line"]), f"more than {_MAX_NODES:,} directives once "
                        "the includes are spliced in; the rest is not read", "error"))
                return
            self.nodes += 1
            node = Node(stmt["directive"], list(stmt.get("args", [])), file,
                        int(stmt["line"]), parent, included_from=via)
            parent.children.append(node)  # an include is kept too: a rule may point at it
            if stmt["directive"] == "include" and "includes" in stmt:
                for index in stmt["includes"]:
                    included = self.payload["config"][index]
                    name = included["file"]
                    if name in chain or len(chain) > _MAX_INCLUDE_DEPTH:
                        self.problems.append(Problem(
                            file, node.line, "include cycle: "
                            + " -> ".join(os.path.basename(f) for f in (*chain, name))
                            + " (nginx would not start)", "error"))
                        continue
                    self.build(parent, included["parsed"], (*chain, name), node)
            elif "block" in stmt:
                self.build(node, stmt["block"], chain, via)
