"""Lua in nginx configurations: reading ``*_by_lua_block`` bodies the way lua-nginx-module
does, and finding what a balancer does to the tries.

crossplane, the configuration parser, reads a Lua block by counting braces but does not
know Lua's long strings and long comments (``[[ } ]]`` ends its block early). lua-nginx-module
itself lexes the block as Lua, so a brace inside any string or comment does not count; the
lexer here does the same and is registered with crossplane for every ``*_by_lua_block``
directive of the http and stream Lua modules.

Nothing here runs Lua: the code is only tokenised and searched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from crossplane.errors import NgxParserSyntaxError
from crossplane.lexer import register_external_lexer

__all__ = ["BLOCK_DIRECTIVES", "Call", "LuaFacts", "Token", "register", "scan", "tokens"]

#: Every ``*_by_lua_block`` directive of lua-nginx-module and stream-lua-nginx-module.
BLOCK_DIRECTIVES = (
    "access_by_lua_block", "balancer_by_lua_block", "body_filter_by_lua_block",
    "content_by_lua_block", "exit_worker_by_lua_block", "header_filter_by_lua_block",
    "init_by_lua_block", "init_worker_by_lua_block", "log_by_lua_block",
    "preread_by_lua_block", "rewrite_by_lua_block", "server_rewrite_by_lua_block",
    "set_by_lua_block", "ssl_certificate_by_lua_block", "ssl_client_hello_by_lua_block",
    "ssl_session_fetch_by_lua_block", "ssl_session_store_by_lua_block",
)


@dataclass(slots=True, frozen=True)
class Token:
    kind: str  # name, number, string, comment, space, punct
    text: str
    line: int  # the line the token starts on (1-based, of the text given)


class _Chars:
    """A character stream with look-ahead; each item is (char, line)."""

    def __init__(self, items: Iterator[tuple[str, int]]) -> None:
        self._items = items
        self._back: list[tuple[str, int]] = []

    def next(self) -> tuple[str, int] | None:
        if self._back:
            return self._back.pop()
        return next(self._items, None)

    def peek(self, n: int = 1) -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        while len(got) < n:
            item = self.next()
            if item is None:
                break
            got.append(item)
        self._back.extend(reversed(got))
        return got


def _long_open(chars: _Chars, first: str) -> int | None:
    """After ``first`` (``[``): the level of a long bracket ``[==[`` opening here, or None."""
    if first != "[":
        return None
    # one character at a time: what is looked at stays in the stream, and nothing past
    # the end of the block is ever pulled from crossplane's iterator
    for seen in range(1, 256):
        ahead = chars.peek(seen)
        if len(ahead) < seen:
            return None
        ch = ahead[-1][0]
        if ch != "=":
            return seen - 1 if ch == "[" else None
    return None


def _read_long(chars: _Chars, level: int, raw: list[str]) -> bool:
    """Consume ``=…=[`` and the body up to ``]=…=]``; False at the end of input."""
    for _ in range(level + 1):
        item = chars.next()
        assert item is not None
        raw.append(item[0])
    close = "]" + "=" * level + "]"
    tail = ""
    while (item := chars.next()) is not None:
        raw.append(item[0])
        tail = (tail + item[0])[-len(close):]
        if tail == close:
            return True
    return False


_NAME_START = re.compile(r"[A-Za-z_]")
_NAME = re.compile(r"[A-Za-z0-9_]")


def _lex(chars: _Chars) -> Iterator[Token]:
    """Lua tokens from the stream; an unterminated string or long bracket raises ValueError."""
    while (item := chars.next()) is not None:
        ch, line = item
        if ch.isspace():
            text = [ch]
            while (ahead := chars.peek()) and ahead[0][0].isspace():
                text.append(ahead[0][0])
                chars.next()
            yield Token("space", "".join(text), line)
        elif ch == "-" and (ahead := chars.peek()) and ahead[0][0] == "-":
            chars.next()
            raw = ["--"]
            nxt = chars.peek()
            level = None
            if nxt and nxt[0][0] == "[":
                chars.next()
                raw.append("[")
                level = _long_open(chars, "[")
                if level is not None:
                    if not _read_long(chars, level, raw):
                        raise ValueError(f"unfinished long comment (line {line})")
                    yield Token("comment", "".join(raw), line)
                    continue
            while (ahead := chars.peek()) and ahead[0][0] != "\n":
                raw.append(ahead[0][0])
                chars.next()
            yield Token("comment", "".join(raw), line)
        elif ch in ("'", '"'):
            raw = [ch]
            while True:
                got = chars.next()
                if got is None or got[0] == "\n":
                    raise ValueError(f"unfinished string (line {line})")
                c = got[0]
                raw.append(c)
                if c == "\\":  # an escape, when the characters come one at a time
                    esc = chars.next()
                    if esc is None:
                        raise ValueError(f"unfinished string (line {line})")
                    raw.append(esc[0])
                elif c == ch:
                    break
            yield Token("string", "".join(raw), line)
        elif ch == "[" and (level := _long_open(chars, ch)) is not None:
            raw = ["["]
            if not _read_long(chars, level, raw):
                raise ValueError(f"unfinished long string (line {line})")
            yield Token("string", "".join(raw), line)
        elif _NAME_START.match(ch):
            text = [ch]
            while (ahead := chars.peek()) and _NAME.match(ahead[0][0]):
                text.append(ahead[0][0])
                chars.next()
            yield Token("name", "".join(text), line)
        elif ch.isdigit():
            text = [ch]
            while (ahead := chars.peek()) and re.match(r"[0-9A-Za-z_.]", ahead[0][0]):
                text.append(ahead[0][0])
                chars.next()
            yield Token("number", "".join(text), line)
        else:
            yield Token("punct", ch, line)


def _numbered(text: str, line: int = 1) -> Iterator[tuple[str, int]]:
    for ch in text:
        yield ch, line
        if ch == "\n":
            line += 1


def tokens(code: str, line: int = 1) -> list[Token]:
    """The Lua tokens of ``code`` (ValueError on an unterminated string or comment)."""
    return list(_lex(_Chars(_numbered(code, line))))


# -- crossplane: read a *_by_lua_block as one argument ------------------------------------

def _split_escapes(items: Iterable[tuple[str, int]]) -> Iterator[tuple[str, int]]:
    """crossplane joins a backslash with the next character; Lua wants them one by one."""
    for ch, line in items:
        if len(ch) == 2 and ch[0] == "\\":
            yield "\\", line
            yield ch[1], line
        else:
            yield ch, line


def _lex_block(char_iterator: Iterator[tuple[str, int]], directive: str
               ) -> Iterator[tuple[str, int, bool]]:
    chars = _Chars(_split_escapes(char_iterator))
    if directive == "set_by_lua_block":  # the one with an argument: the variable
        arg: list[str] = []
        while (item := chars.next()) is not None:
            if item[0].isspace():
                if arg:
                    yield "".join(arg), item[1], False
                    break
                continue
            arg.append(item[0])
    while (item := chars.next()) is not None and item[0].isspace():
        pass
    if item is None or item[0] != "{":
        raise NgxParserSyntaxError(f'directive "{directive}" has no opening "{{"', None,
                                   item[1] if item else None)
    start = item[1]
    depth = 1
    body: list[str] = []
    try:
        for tok in _lex(chars):
            if tok.kind == "punct" and tok.text == "{":
                depth += 1
            elif tok.kind == "punct" and tok.text == "}":
                depth -= 1
                if depth == 0:
                    yield "".join(body), tok.line, True
                    yield ";", tok.line, False
                    return
            body.append(tok.text)
    except ValueError as exc:
        raise NgxParserSyntaxError(f"{directive}: {exc}", None, start) from None
    raise NgxParserSyntaxError(f'unexpected end of file in "{directive}", expecting "}}"',
                               None, start)


def register() -> None:
    """Make crossplane read every ``*_by_lua_block`` with this lexer (idempotent)."""
    register_external_lexer(directives=BLOCK_DIRECTIVES, lexer=_lex_block)


# -- what a balancer does ------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class Call:
    """One call of a balancer function in the code."""

    name: str  # set_more_tries, set_current_peer
    line: int  # in the text given (with its first line number)
    argument: str  # the first argument's text ("1", "n", "" when none)
    conditional: bool  # inside an if (the call may not happen on every invocation)
    looped: bool  # inside a for / while / repeat
    receiver: str = ""  # "b" in b.set_more_tries(1)
    guarded: bool = False  # after a return inside an if: only while a budget lasts
    budget: int | None = None  # the guard's largest number (`if n > 8000 then return`)


@dataclass(slots=True)
class LuaFacts:
    calls: list[Call] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)  # module names given to require
    #: ``local lb = require "mylb"`` → {"lb": "mylb"}: what a name stands for
    bindings: dict[str, str] = field(default_factory=dict)
    #: ``X.balance()`` calls: the names X (ingress-nginx's balancers are called so)
    balance_calls: list[str] = field(default_factory=list)
    #: ``X.f()`` calls of anything but Lua's and nginx's own libraries: code elsewhere
    outside: list[str] = field(default_factory=list)
    error: str | None = None  # the code could not be tokenised

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


_WATCHED = ("set_more_tries", "set_current_peer")


def scan(code: str, line: int = 1) -> LuaFacts:
    """Find the balancer calls in ``code`` and whether each sits in a condition or a loop.

    The nesting is tracked by Lua's block keywords (``if``/``for``/``while``/``repeat``/
    ``function``/``do`` … ``end``/``until``); a function body counts as unconditional,
    because a balancer usually calls its helper on every invocation. A ``return`` (or
    ``ngx.exit``, ``error``) inside an ``if`` guards what follows it in the same function:
    ``if ctx.n > 3 then return ngx.exit(500) end; b.set_more_tries(1)`` adds tries only
    while the budget lasts, and the largest number of the condition is taken as the budget.
    Aliases (``local smt = require("ngx.balancer").set_more_tries; smt(1)``) and string keys
    (``b["set_more_tries"](1)``) are calls too.
    """
    facts = LuaFacts()
    try:
        every = tokens(code, line)
    except ValueError as exc:
        facts.error = str(exc)
        return facts
    kept = [i for i, t in enumerate(every) if t.kind not in ("space", "comment")]
    toks = [every[i] for i in kept]
    stack: list[str] = []  # if, loop, repeat, function, do
    conditions: list[list[int]] = []  # the numbers of each open if's condition
    guards: dict[int, int | None] = {}  # function depth -> the guard's budget (None: no number)
    aliases: dict[str, str] = {}  # local name -> set_more_tries / set_current_peer
    pending_loop_do = 0  # a for/while waits for its `do`
    for i, tok in enumerate(toks):
        watched = _watched_call(toks, i, aliases)
        if watched is not None:
            scope = _scope(stack)
            depth = _function_depth(stack)
            receiver = (toks[i - 2].text if i >= 2 and toks[i - 1].text in (".", ":")
                        and toks[i - 2].kind == "name" else "")
            call_at = i if tok.kind == "name" else i + 1  # b["x"](…): the `]`
            facts.calls.append(Call(watched, tok.line,
                                    _first_argument(every, kept, toks, call_at),
                                    "if" in scope, bool({"loop", "repeat"} & set(scope)),
                                    receiver, depth in guards, guards.get(depth)))
            continue
        if tok.kind != "name":
            continue
        word = tok.text
        if word == "if":
            stack.append("if")
            conditions.append(_condition_numbers(toks, i))
        elif word in ("for", "while"):
            stack.append("loop")
            pending_loop_do += 1
        elif word == "repeat":
            stack.append("repeat")
        elif word == "function":
            stack.append("function")
        elif word == "do":
            if pending_loop_do:
                pending_loop_do -= 1
            else:
                stack.append("do")
        elif word in {"end", "until"}:
            if stack and stack.pop() == "if" and conditions:
                conditions.pop()
        elif word in ("return", "exit", "error") and "if" in _scope(stack) and conditions \
                and (word == "return" or _is_call(toks, i)):
            depth = _function_depth(stack)
            budget = max(conditions[-1]) if conditions[-1] else None
            if depth not in guards or (budget is not None and (guards[depth] or 0) < budget):
                guards[depth] = budget
        elif word in _WATCHED and i + 1 < len(toks) and not _is_call(toks, i):
            alias = _alias(toks, i)
            if alias:
                aliases[alias] = word
        elif word == "require":
            name = _required(toks, i)
            if name:
                facts.requires.append(name)
                bound = _bound_name(toks, i)
                if bound:
                    facts.bindings[bound] = name
        elif word == "balance" and i >= 2 and toks[i - 1].text in (".", ":") \
                and toks[i - 2].kind == "name" and _is_call(toks, i):
            facts.balance_calls.append(toks[i - 2].text)
        if i >= 2 and toks[i - 1].text in (".", ":") and toks[i - 2].kind == "name" \
                and toks[i - 2].text not in _LIBRARIES and _is_call(toks, i) \
                and not facts.bindings.get(toks[i - 2].text, "").startswith(("ngx", "resty")):
            facts.outside.append(f"{toks[i - 2].text}{toks[i - 1].text}{word}()")
    return facts


#: Lua's standard libraries and nginx's: calls into them run no balancer code of ours.
_LIBRARIES = {"ngx", "string", "table", "math", "os", "io", "coroutine", "debug", "utf8",
              "bit", "jit", "ffi"}


def _watched_call(toks: list[Token], i: int, aliases: dict[str, str]) -> str | None:
    """The balancer function called at ``i``: ``b.set_more_tries(…)``, an alias's call, or
    ``b["set_more_tries"](…)`` (at the string); None if there is none."""
    tok = toks[i]
    if tok.kind == "name":
        name = tok.text if tok.text in _WATCHED else aliases.get(tok.text)
        if name is not None and _is_call(toks, i):
            if tok.text in aliases and i > 0 and toks[i - 1].text in (".", ":"):
                return None  # x.smt() is not the local alias smt
            return name
        return None
    if tok.kind == "string" and _string_value(tok) in _WATCHED and i >= 1 \
            and toks[i - 1].text == "[" and i + 2 < len(toks) and toks[i + 1].text == "]" \
            and toks[i + 2].text == "(":
        return _string_value(tok)
    return None


def _alias(toks: list[Token], i: int) -> str | None:
    """``local smt = require("ngx.balancer").set_more_tries`` → smt."""
    j = i - 1
    depth = 0
    while j >= 0:
        text = toks[j].text
        if text in (")", "]"):
            depth += 1
        elif text in ("(", "["):
            depth -= 1
        elif depth == 0 and text == "=":
            return toks[j - 1].text if j >= 1 and toks[j - 1].kind == "name" else None
        elif depth == 0 and toks[j].kind == "name" and toks[j].text in _KEYWORDS:
            return None
        j -= 1
    return None


_KEYWORDS = {"if", "then", "else", "elseif", "end", "for", "while", "do", "repeat", "until",
             "function", "return", "local", "and", "or", "not", "in"}


def _condition_numbers(toks: list[Token], i: int) -> list[int]:
    """The integer literals between ``if`` and its ``then``."""
    numbers = []
    for tok in toks[i + 1 :]:
        if tok.kind == "name" and tok.text == "then":
            break
        if tok.kind == "number" and tok.text.isdigit():
            numbers.append(int(tok.text))
    return numbers


def _function_depth(stack: list[str]) -> int:
    """Which function a token is in: the index of the innermost ``function`` frame."""
    return len(stack) - 1 - stack[::-1].index("function") if "function" in stack else -1


def _scope(stack: list[str]) -> list[str]:
    """The frames that matter for one invocation: those inside the innermost function."""
    if "function" in stack:
        last = len(stack) - 1 - stack[::-1].index("function")
        return stack[last + 1 :]
    return stack


def _is_call(toks: list[Token], i: int) -> bool:
    """``name(`` or ``name "…"``, not a definition (``function a.b:set_more_tries``)."""
    j = i - 1
    while j >= 1 and toks[j].text in (".", ":") and toks[j - 1].kind == "name":
        j -= 2  # back over a.b.c:
    if j >= 0 and toks[j].kind == "name" and toks[j].text == "function":
        return False
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    return nxt is not None and (nxt.text == "(" or nxt.kind == "string")


def _first_argument(every: list[Token], kept: list[int], toks: list[Token], i: int) -> str:
    """The first argument's text as written (whitespace collapsed)."""
    if i + 1 >= len(toks) or toks[i + 1].text != "(":
        return toks[i + 1].text if i + 1 < len(toks) else ""
    depth = 0
    start = kept[i + 1] + 1
    end = start
    for j in range(i + 1, len(toks)):
        text = toks[j].text
        if text in ("(", "{", "["):
            depth += 1
        elif text in (")", "}", "]"):
            depth -= 1
        if depth == 0 or (text == "," and depth == 1):
            end = kept[j]
            break
    else:
        end = len(every)
    raw = "".join(t.text for t in every[start:end] if t.kind != "comment")
    return " ".join(raw.split())


def _string_value(tok: Token) -> str | None:
    """The text of a Lua string token: "x", 'x' or [[x]] / [==[x]==]."""
    if tok.kind != "string":
        return None
    if tok.text[0] in "'\"":
        return tok.text[1:-1]
    level = tok.text.index("[", 1) - 1  # [==[ → 2
    return tok.text[level + 2 : len(tok.text) - level - 2]


def _required(toks: list[Token], i: int) -> str | None:
    """``require "x"``, ``require("x")``, ``require 'x'``, ``require [[x]]`` → x."""
    j = i + 1
    if j < len(toks) and toks[j].text == "(":
        j += 1
    return _string_value(toks[j]) if j < len(toks) else None


def _bound_name(toks: list[Token], i: int) -> str | None:
    """``local lb = require …`` or ``lb = require …`` → lb."""
    if i >= 2 and toks[i - 1].text == "=" and toks[i - 2].kind == "name":
        return toks[i - 2].text
    return None
