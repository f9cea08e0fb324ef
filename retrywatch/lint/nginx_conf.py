"""An nginx configuration as a tree: crossplane parses each file alone, this module resolves
each ``include`` (relative paths against nginx's conf prefix, absolute ones under the
root: a repository's copy of ``/etc/nginx`` is not the machine's) and splices it in place
(a file included in ten locations appears ten times, as nginx reads it), keeps every
directive's file and line, and answers the questions the rules ask: which block encloses
a directive, and what value a directive has there after nginx's inheritance (http →
server → location → nested location; stream → server).

Each file is read once, at most ``MAX_FILE_BYTES``, without blocking on a FIFO; crossplane
parses a temporary copy of what was read (as nginx reads it: a ``*_by_lua_block{`` with no
space gets one), and every problem names the file as given.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import select
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import crossplane
from crossplane.analyzer import analyze, enter_block_ctx
from crossplane.errors import NgxParserDirectiveError

from retrywatch.lint import lua

__all__ = ["MAX_FILE_BYTES", "Config", "Node", "Problem", "default_root", "load",
           "load_folder", "local_path", "read_bytes", "rooted"]

lua.register()

#: Blocks whose directives inherit into the blocks inside them (the merge chain).
_INHERITING = {"http", "stream", "server", "location"}
#: Top-level directives that make a file a whole configuration (not a snippet).
_MAIN = {"events", "http", "stream", "mail", "worker_processes", "user", "pid", "load_module"}
#: Include nesting beyond which a cycle is assumed (nginx itself has no limit).
_MAX_INCLUDE_DEPTH = 32
#: Directives in one configuration once its includes are spliced in, at most.
_MAX_NODES = 5_000_000
#: Bytes of one file read at most: a larger one is an error, not read.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: A FIFO or device that gives nothing for this long is an error (a FIFO nothing writes to
#: would otherwise hang the run).
IDLE_SECONDS = 30.0
#: Symbolic links followed, one after the other, under a root.
_MAX_LINKS = 40
#: Bytes of the main file kept in ``Config.head``.
HEAD_BYTES = 4096
#: The folders whose snippets are stream ones (the immediate parent's name, exactly).
_STREAM_FOLDERS = {"stream", "stream.d", "streams-enabled", "streams-available"}
_ETC_NGINX = "/etc/nginx/"
_BOM = b"\xef\xbb\xbf"


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
    #: Where the configuration's absolute paths are (includes, Lua files): "/" for this
    #: machine's, the folder holding a copy's ``etc/nginx`` otherwise (see ``rooted``).
    root_dir: str = "/"
    #: nginx's conf prefix: the folder relative includes are found in ("" for the working
    #: directory).
    conf_dir: str = ""
    #: The first ``HEAD_BYTES`` of the main file as read (a pipe cannot be read again).
    head: bytes = b""

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path) or "."

    def rooted(self, path: str) -> str:
        """An absolute path of the configuration (``/etc/nginx/lua/x.lua``) where it is
        read from: under ``root_dir``."""
        return rooted(path, self.root_dir)


def rooted(path: str, root_dir: str) -> str:
    """``path`` under ``root_dir`` when it is absolute; unchanged otherwise."""
    if not os.path.isabs(path) or root_dir in ("", "/"):
        return path
    return os.path.normpath(os.path.join(root_dir, path.lstrip("/")))


def local_path(path: str, root_dir: str) -> str:
    """Where a file of a configuration under ``root_dir`` is read: a symbolic link whose
    target is absolute (Debian's ``sites-enabled/default`` → ``/etc/nginx/sites-available/
    default``) is followed under the root, as on the server the copy is of."""
    if root_dir in ("", "/"):
        return path
    for _ in range(_MAX_LINKS):
        try:
            target = os.readlink(path)
        except OSError:
            return path  # not a link
        path = rooted(target, root_dir) if os.path.isabs(target) else \
            os.path.normpath(os.path.join(os.path.dirname(path), target))
    return path


def _before_etc_nginx(path: str) -> str | None:
    """The part of ``path`` before its last ``/etc/nginx/`` ("" or "/" when it starts
    with it), None when it has none."""
    norm = os.path.normpath(path)
    absolute = os.path.isabs(norm)
    at = (norm if absolute else "/" + norm).rfind(_ETC_NGINX)
    if at < 0:
        return None
    if absolute:
        return norm[:at] or "/"
    return norm[:at - 1] if at > 0 else ""


def default_root(path: str) -> str:
    """The root of the configuration ``path`` belongs to: the part of its path before
    ``/etc/nginx/`` (``repo/etc/nginx/nginx.conf`` → ``repo``: a copy of a server's
    tree, whose ``include /etc/nginx/…`` mean the copy's files), else ``/``."""
    if path == "-":
        return "/"
    before = _before_etc_nginx(path)
    if before is None:
        return "/"
    return before or "."


def _conf_dir(path: str, snippet: bool) -> str:
    """nginx's conf prefix for ``path``: its folder for a whole configuration (nginx -c);
    for a snippet, the ``etc/nginx`` folder it is under (whose nginx.conf includes it),
    else its own folder; the working directory for standard input or a pipe."""
    if path == "-" or not os.path.isfile(path):
        return ""
    if snippet:
        before = _before_etc_nginx(path)
        if before is not None:
            return os.path.join(before, "etc", "nginx") if before else "etc/nginx"
    return os.path.dirname(path)


def _is_snippet(path: str, parsed: list[dict[str, Any]]) -> str | None:
    """For a file with no main-context directive: the subsystem it belongs in, told by its
    content (an http server cannot proxy_pass outside a location) or by the name of the
    folder it is in (``stream``, ``stream.d``, ``streams-enabled``, ``streams-available``;
    any other folder of its path says nothing)."""
    names = {stmt["directive"] for stmt in parsed}
    if not parsed or names & _MAIN:
        return None
    folder = os.path.basename(os.path.dirname(os.path.abspath(path))) if path != "-" else ""
    if folder in _STREAM_FOLDERS or any(
        stmt["directive"] == "server" and any(c["directive"] == "proxy_pass"
                                              for c in stmt.get("block", []))
        for stmt in parsed):
        return "stream"
    return "http"


def read_bytes(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """What ``path`` holds (``-``: standard input), read once, at most ``limit`` bytes. A
    FIFO, a pipe (``/dev/stdin``, ``<(…)``) or a device is opened without blocking and
    read as data comes, so that one nothing writes to is an error after ``IDLE_SECONDS``
    instead of a hang. OSError (with a strerror) when it cannot be read."""
    if path == "-":
        return _read_stdin(limit)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if stat.S_ISREG(mode):
            if nonblocking:
                os.set_blocking(fd, True)
            return _read_fd(fd, limit, None)
        return _read_fd(fd, limit, IDLE_SECONDS)
    finally:
        os.close(fd)


def _read_stdin(limit: int) -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise OSError(errno.EBADF, "no standard input")
    data: bytes = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes")
    return data


def _read_fd(fd: int, limit: int, idle: float | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        if idle is not None and not _readable(fd, idle):
            raise OSError(errno.ETIMEDOUT, f"nothing to read for {idle:g} s (a FIFO that "
                          "nothing writes to?)")
        try:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes")
    return b"".join(chunks)


def _readable(fd: int, timeout: float) -> bool:
    """Data or the writer's end within ``timeout`` seconds (a FIFO no writer ever opened
    stays silent: read() alone would say end of file, or block)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(int(timeout * 1000)))
    return bool(select.select([fd], [], [], timeout)[0])


_GLUED = re.compile(rb"(?:^|(?<=[\s;{}]))([a-z_]+_by_lua_block)\{")
_COMMENT = re.compile(rb"(?:^|(?<=[\s;{}]))#")


def _unglue(data: bytes) -> bytes:
    """``content_by_lua_block{`` (no space) as ``content_by_lua_block {``: nginx reads both,
    but crossplane hands a block to the Lua lexer only after whitespace. Comments are left
    as they are; the line numbers do not change."""
    if b"_by_lua_block{" not in data:
        return data
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if b"_by_lua_block{" not in line:
            continue
        comment = _COMMENT.search(line)
        code, rest = (line[:comment.start()], line[comment.start():]) if comment else (line, b"")
        lines[i] = _GLUED.sub(rb"\1 {", code) + rest
    return b"\n".join(lines)


def _bom(name: str, data: bytes) -> Problem:
    word = re.split(rb"[\s;{]", data[3:].lstrip(b"\xef\xbb\xbf"), maxsplit=1)[0][:40]
    shown = word.decode("utf-8", errors="replace")
    return Problem(name, 1, "the file starts with a UTF-8 byte order mark (EF BB BF): nginx "
                   f'reads it as part of the first word (unknown directive "\\ufeff{shown}") '
                   "and does not start; save the file without it", "error")


Parsed = list[dict[str, Any]]


class _Reader:
    """Each file read once and parsed once by crossplane, alone (``single=True``: the
    includes are resolved by the builder); the parse of a copy of what was read, so that
    a pipe is read once and a glued Lua block gets its space."""

    def __init__(self, contents: dict[str, bytes] | None = None,
                 heads: Iterable[str] = (), root: str | None = None) -> None:
        self.contents = dict(contents or {})  # already read (an input, standard input)
        self.root = root  # None: each file's default_root
        self._want_heads = set(heads)
        self._parsed: dict[str, tuple[Parsed, list[Problem]] | OSError] = {}
        self._includes: dict[str, list[str]] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.heads: dict[str, bytes] = {}  # the first bytes of the files in want_heads

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def parse(self, name: str) -> tuple[Parsed, list[Problem]]:
        """The statements of ``name`` and the problems of its text; OSError if unread."""
        found = self._parsed.get(name)
        if found is None:
            try:
                found = self._parse(name)
            except OSError as exc:
                found = exc
            self._parsed[name] = found
        if isinstance(found, OSError):
            raise found
        return found

    def includes(self, name: str) -> list[str]:
        """The patterns of the ``include`` directives of ``name`` (none if unreadable)."""
        if name not in self._includes:
            try:
                parsed, _problems = self.parse(name)
            except OSError:
                parsed = []
            patterns: list[str] = []
            stack = [parsed]
            while stack:
                for stmt in stack.pop():
                    if stmt["directive"] == "include" and stmt.get("args"):
                        patterns.append(stmt["args"][0])
                    if "block" in stmt:
                        stack.append(stmt["block"])
            self._includes[name] = patterns
        return self._includes[name]

    def _parse(self, name: str) -> tuple[Parsed, list[Problem]]:
        data = self.contents.pop(name, None)
        if data is None:
            data = read_bytes(local_path(name, self.root if self.root is not None
                                         else default_root(name)))
        if name in self._want_heads:
            self.heads[name] = data[:HEAD_BYTES]
        problems: list[Problem] = []
        if data.startswith(_BOM):
            problems.append(_bom(name, data))
            data = data[len(_BOM):]
        data = _unglue(data)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="retrywatch-lint-")
        copy = os.path.join(self._tmp.name, f"{len(self._parsed)}.conf")
        with open(copy, "wb") as f:
            f.write(data)
        try:
            payload: dict[str, Any] = crossplane.parse(copy, single=True, check_ctx=False,
                                                       comments=False)
        finally:
            os.unlink(copy)
        for err in payload["errors"]:
            message = _clean(str(err["error"]).replace(copy, name), name)
            problems.append(Problem(name, err.get("line"), message, "error"))
        parsed: Parsed = payload["config"][0]["parsed"] if payload["config"] else []
        return parsed, problems


def _resolve(pattern: str, conf_dir: str, root_dir: str) -> tuple[str, list[str]]:
    """The files an ``include`` names: relative to nginx's conf prefix, absolute ones under
    the root; a glob's matches sorted (as nginx's glob() gives them). With the path looked
    for, for messages."""
    base, rel = (root_dir, pattern.lstrip("/")) if os.path.isabs(pattern) else (conf_dir,
                                                                                pattern)
    full = os.path.normpath(os.path.join(base, rel)) if base or rel else rel
    if glob.has_magic(rel):
        matches = glob.glob(os.path.join(glob.escape(base), rel))
        return full, sorted(os.path.normpath(m) for m in matches)
    return full, [full]


def load(path: str, *, context: str | None = None, root: str | None = None,
         content: bytes | None = None) -> Config:
    """Parse ``path`` with its includes. ``context``: ``http`` or ``stream`` to read the
    file as the body of that block (a conf.d snippet); by default a file without any
    main-context directive is read as an http snippet (a stream one when its servers
    proxy_pass directly, or its folder is a stream one). ``root``: where absolute paths
    are found (default: ``default_root(path)``). ``content``: what ``path`` holds, already
    read (``path`` is then only its name: ``-`` for standard input)."""
    root_dir = root if root is not None else default_root(path)
    with _Reader({path: content} if content is not None else None, [path],
                 root_dir) as reader:
        try:
            parsed, _problems = reader.parse(path)
        except OSError as exc:
            return Config(path, Node("main", [], path, 0), [],
                          [Problem(path, None, exc.strerror or str(exc), "error")], root_dir)
        snippet = context or _is_snippet(path, parsed)
        conf_dir = _conf_dir(path, snippet is not None)
        top = Node(snippet or "main", [], path, 0)
        builder = _Builder(reader, conf_dir, root_dir)
        builder.splice(top, path, (), None, (), snippet is None)
        return Config(path, top, list(builder.files), builder.problems, root_dir, conf_dir,
                      reader.heads.get(path, b""))


def load_folder(paths: list[str], *, root: str | None = None,
                contents: dict[str, bytes] | None = None) -> list[Config]:
    """The ``*.conf`` files of a folder that no nginx.conf of it included, read the way an
    nginx.conf with ``include conf.d/*.conf;`` reads them: the snippets (files with no
    main-context directive) together, the http ones as one http block and the stream ones
    as one stream block, so that an upstream in one file and its location in another are
    one configuration; a whole configuration that none of them includes as its own root.
    A file another one includes is read only at its include. ``contents``: the files'
    contents, already read."""
    problems: list[Problem] = []
    with _Reader(contents, paths, root) as reader:
        kinds: dict[str, str | None] = {}
        for path in paths:
            try:
                parsed, _problems = reader.parse(path)
            except OSError as exc:
                problems.append(Problem(path, None, exc.strerror or str(exc), "error"))
                continue
            kinds[path] = _is_snippet(path, parsed) or (None if parsed else "http")
        reach = {path: _reach(reader, path, kind is not None, root) for path, kind in kinds.items()}
        included = {other for path, found in reach.items() for other in found if other != path}
        roots: list[str] = []
        reached: set[str] = set()
        # first those nothing includes; then one of each include cycle left
        for path in [p for p in kinds if p not in included] + [p for p in kinds if p in included]:
            if path not in reached:
                roots.append(path)
                reached |= reach[path] | {path}
        configs = [_build(reader, None, [path], root) for path in roots if kinds[path] is None]
        for kind in ("http", "stream"):
            together = [p for p in roots if kinds[p] == kind]
            if together:
                configs.append(_build(reader, kind, together, root))
    if problems:
        if not configs:
            configs.append(Config(paths[0], Node("main", [], paths[0], 0), [], [],
                                  default_root(paths[0]) if root is None else root))
        configs[0].problems[:0] = problems
    return configs


def _reach(reader: _Reader, path: str, snippet: bool, root: str | None) -> set[str]:
    """Every file ``path`` includes, directly or not."""
    conf_dir = _conf_dir(path, snippet)
    root_dir = root if root is not None else default_root(path)
    found: set[str] = set()
    todo = [path]
    while todo:
        for pattern in reader.includes(todo.pop()):
            for name in _resolve(pattern, conf_dir, root_dir)[1]:
                if name not in found:
                    found.add(name)
                    todo.append(name)
    return found


def _build(reader: _Reader, kind: str | None, paths: list[str], root: str | None) -> Config:
    """One configuration of ``paths`` spliced one after the other into one block: ``main``
    (``kind`` None: one whole configuration), ``http`` or ``stream``."""
    root_dir = root if root is not None else default_root(paths[0])
    top = Node(kind or "main", [], paths[0], 0)
    builder = _Builder(reader, "", root_dir)
    for path in paths:
        builder.conf_dir = _conf_dir(path, kind is not None)
        try:
            builder.splice(top, path, (), None, (), kind is None)
        except OSError as exc:
            builder.problems.append(Problem(path, None, exc.strerror or str(exc), "error"))
    return Config(paths[0], top, list(builder.files), builder.problems, root_dir,
                  builder.conf_dir, reader.heads.get(paths[0], b""))


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
    """Splices the parsed files into one tree, each include at its site, and checks each
    file's directives in the context of each include site (crossplane's "directive is not
    allowed here"); a cycle is an error and the splice stops there; so does a tree past
    ``_MAX_NODES`` directives."""

    def __init__(self, reader: _Reader, conf_dir: str, root_dir: str) -> None:
        self.reader = reader
        self.conf_dir = conf_dir
        self.root_dir = root_dir
        self.problems: list[Problem] = []
        self.files: dict[str, None] = {}  # every file spliced, in order
        self.nodes = 0
        self.overflow = False
        self._checked: set[tuple[str, tuple[str, ...]]] = set()

    def splice(self, parent: Node, name: str, chain: tuple[str, ...], via: Node | None,
               ctx: tuple[str, ...], checking: bool) -> None:
        """The statements of file ``name`` into ``parent`` (OSError if it is unreadable).
        ``ctx``: crossplane's context there; ``checking``: check the directives' contexts
        (not for a snippet: its context is a guess), once per file and context."""
        parsed, problems = self.reader.parse(name)
        if name not in self.files:
            self.files[name] = None
            self.problems += problems
        if checking:
            checking = (name, ctx) not in self._checked
            self._checked.add((name, ctx))
        self.build(parent, parsed, (*chain, name), via, ctx, checking)

    def build(self, parent: Node, parsed: Parsed, chain: tuple[str, ...], via: Node | None,
              ctx: tuple[str, ...], checking: bool) -> None:
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
            ok = checking and self._allowed(file, stmt, ctx)
            if stmt["directive"] == "include" and "block" not in stmt:
                self.include(parent, node, chain, ctx, ok)
            elif "block" in stmt:
                self.build(node, stmt["block"], chain, via, enter_block_ctx(stmt, ctx), ok)

    def _allowed(self, file: str, stmt: dict[str, Any], ctx: tuple[str, ...]) -> bool:
        term = "{" if "block" in stmt else ";"
        try:
            analyze(file, stmt, term, ctx, strict=False, check_ctx=True, check_args=False)
        except NgxParserDirectiveError as exc:
            self.problems.append(Problem(file, int(stmt["line"]), _clean(str(exc), file),
                                         "error"))
            return False
        return True

    def include(self, parent: Node, node: Node, chain: tuple[str, ...],
                ctx: tuple[str, ...], checking: bool) -> None:
        if not node.args:
            return
        pattern = node.args[0]
        file = chain[-1]
        full, names = _resolve(pattern, self.conf_dir, self.root_dir)
        if not names:
            self.problems.append(Problem(file, node.line, f"include {pattern} matches no file"
                                         + (f" ({full})" if full != pattern else ""), "note"))
            return
        for name in names:
            if os.path.abspath(name) in map(os.path.abspath, chain) \
                    or len(chain) > _MAX_INCLUDE_DEPTH:
                self.problems.append(Problem(
                    file, node.line, "include cycle: "
                    + " -> ".join(os.path.basename(f) for f in (*chain, name))
                    + " (nginx would not start)", "error"))
                continue
            try:
                self.splice(parent, name, chain, node, ctx, checking)
            except OSError as exc:
                missing = isinstance(exc, FileNotFoundError)
                reason = "no such file" if missing else (exc.strerror or str(exc))
                self.problems.append(Problem(file, node.line, f"include {pattern}: {reason}"
                                             + (f" ({name})" if name != pattern else ""),
                                             "note" if missing else "error"))
