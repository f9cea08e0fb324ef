"""``retrywatch lint``'s Lua: the ``*_by_lua_block`` lexer registered with crossplane (it must
read a block the way lua-nginx-module does: a brace in a string, long string or comment does
not count, and the directive after the block parses normally) and ``lua.scan``, which finds
the balancer calls and whether they are conditional or looped."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import crossplane
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import retrywatch.lint.nginx_conf  # noqa: F401  (registers the Lua lexer with crossplane)
from retrywatch.cli import main
from retrywatch.lint import Severity, lint, lua

# -- the lexer, through crossplane -----------------------------------------------------------

HEAD = "events {}\nhttp {\n    init_by_lua_block {"
TAIL = "}\n    after_directive 1 two;\n}\n"


def parse_text(text: str, directory: str | None = None) -> dict[str, Any]:
    """crossplane's payload for ``text`` as nginx.conf (in a fresh or the given folder)."""
    folder = directory or tempfile.mkdtemp(prefix="rw-lua-")
    path = os.path.join(folder, "nginx.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    payload: dict[str, Any] = crossplane.parse(path, comments=False)
    return payload


def http_block(payload: dict[str, Any]) -> list[dict[str, Any]]:
    assert payload["errors"] == [], payload["errors"]
    (events, http) = payload["config"][0]["parsed"]
    assert events["directive"] == "events"
    assert http["directive"] == "http"
    block: list[dict[str, Any]] = http["block"]
    return block


def block_and_next(body: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse ``init_by_lua_block {BODY}`` followed by a directive; both statements."""
    block = http_block(parse_text(HEAD + body + TAIL))
    assert [s["directive"] for s in block] == ["init_by_lua_block", "after_directive"], block
    return block[0], block[1]


def expected_next_line(body: str) -> int:
    return (HEAD + body + TAIL).split("after_directive")[0].count("\n") + 1


BODIES = [
    pytest.param(' local s = "}{" ', id="double-quoted braces"),
    pytest.param(" local s = '}}' .. '{' ", id="single-quoted braces"),
    pytest.param(r' local s = "a\"}" .. ' + r"'b\'{' .. " + r'"\\" ', id="escaped quotes"),
    pytest.param("\n    -- a } in a comment\n    local x = 1\n", id="line comment"),
    pytest.param(" local t = { a = { b = { } }, '}', { {} } } ", id="nested tables"),
    pytest.param("\n    local n = #t  -- # is Lua's length, not an nginx comment\n",
                 id="length operator"),
    pytest.param(" local s = '${x} $y' ", id="dollar braces in a string"),
    pytest.param("\n    local s = [[ } { ]]\n" + "    local pad = 1\n" * 8,
                 id="long string, far from the end"),
    pytest.param("\n    local s = [==[ ]] } ]=] ]==]\n" + "    local pad = 1\n" * 8,
                 id="long string level 2, far from the end"),
    pytest.param("\n    --[[ } \n    { ]] local x = 1\n" + "    local pad = 1\n" * 8,
                 id="long comment, far from the end"),
    pytest.param("\n    --[=[ ]] } ]=] local x = 1\n" + "    local pad = 1\n" * 8,
                 id="long comment level 1, far from the end"),
    pytest.param(" local s = [[ } ]] ", id="long string near the end"),
    pytest.param(" local s = [==[ ]] } ]=] ]==] ", id="long string level 2 near the end"),
    pytest.param(" --[[ } ]] local x = 1 ", id="long comment near the end"),
    pytest.param("\n    local peer = peers[1]\n", id="table index near the end"),
]


@pytest.mark.parametrize("body", BODIES)
def test_lua_block_is_one_argument_and_the_next_directive_parses(body: str) -> None:
    block, after = block_and_next(body)
    assert block["args"] == [body]
    assert block["line"] == 3
    assert after["args"] == ["1", "two"]
    assert after["line"] == expected_next_line(body)


def test_set_by_lua_block_keeps_its_variable() -> None:
    text = ("events {}\nhttp {\n    server {\n        location / {\n"
            "            set_by_lua_block $x { return '}' }\n"
            "            return 200 $x;\n        }\n    }\n}\n")
    (server,) = http_block(parse_text(text))
    (location,) = server["block"]
    assert [(s["directive"], s["args"], s["line"]) for s in location["block"]] == [
        ("set_by_lua_block", ["$x", " return '}' "], 5), ("return", ["200", "$x"], 6)]


def test_every_block_directive_is_lexed_as_lua() -> None:
    """A brace in a string in each of the *_by_lua_block directives (http and stream)."""
    for directive in lua.BLOCK_DIRECTIVES:
        if directive == "set_by_lua_block":
            continue
        text = f"events {{}}\nhttp {{\n    {directive} {{ local s = '}}' }}\n    after 1;\n}}\n"
        block = http_block(parse_text(text))
        assert [(s["directive"], s["args"]) for s in block] == [
            (directive, [" local s = '}' "]), ("after", ["1"])], directive


def test_block_without_a_space_before_the_brace_is_read_as_lua(tmp_path: Path) -> None:
    """nginx accepts ``init_by_lua_block{`` with no space; crossplane hands a block to the
    Lua lexer only after whitespace, so lint reads the file with the space inserted (same
    lines): no error, and the ``}`` in the Lua string does not end the block."""
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n    init_by_lua_block{ local s = '}' }\n"
                    "    after_directive 1 two;\n}\n")
    assert lint([str(conf)]).findings == []


# -- broken Lua: one lint_input error, no traceback -------------------------------------------

BROKEN = [
    pytest.param("events {}\nhttp {\n    init_by_lua_block {\n        local t = [[ oops\n"
                 "    }\n    server { listen 80; }\n}\n", 3, id="unterminated long string"),
    pytest.param("events {}\nhttp {\n    init_by_lua_block {\n        --[==[ oops ]=]\n"
                 "    }\n}\n", 3, id="unterminated long comment"),
    pytest.param("events {}\nhttp {\n    init_by_lua_block {\n        local s = \"oops\n"
                 "    }\n}\n", 3, id="unterminated string"),
    pytest.param("events {}\nhttp {\n    server { listen 80; }\n    init_by_lua_block {\n"
                 "        local x = { 1, 2\n", 4, id="block not closed at the end of file"),
]


@pytest.mark.parametrize(("text", "line"), BROKEN)
def test_broken_lua_is_one_lint_input_error(tmp_path: Path, text: str, line: int) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = lint([str(conf)])
    assert [(f.code, f.severity, f.location.file, f.location.line)
            for f in result.findings] == [("lint_input", Severity.ERROR, str(conf), line)]
    cli = CliRunner().invoke(main, ["lint", str(conf)])
    assert cli.exit_code == 2, cli.output
    assert cli.exception is None or isinstance(cli.exception, SystemExit)
    assert "Traceback" not in cli.output
    assert f"{conf}:{line}:" in cli.stderr


def test_broken_lua_message_names_no_none(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(str(BROKEN[0].values[0]))
    (finding,) = lint([str(conf)]).findings
    assert "None" not in finding.message


# -- property: any Lua made of safe pieces round-trips exactly ------------------------------

KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
            "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true",
            "until", "while"}
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in KEYWORDS)
TEXT = st.text(alphabet="ab }{][=-#$;'\"\\\n", max_size=12)
PLAIN = st.text(alphabet="ab }{][=-#$;", max_size=12)


@st.composite
def quoted(draw: st.DrawFn) -> str:
    quote = draw(st.sampled_from(["'", '"']))
    parts = draw(st.lists(st.one_of(PLAIN, st.sampled_from(
        ["\\\\", "\\'", '\\"', "\\n", "\\}", "\\{"])), max_size=4))
    return quote + "".join(parts) + quote


@st.composite
def long_bracket(draw: st.DrawFn) -> str:
    level = draw(st.integers(0, 3))
    close = "]" + "=" * level + "]"
    # the first closing bracket is the one at the end
    body = draw(TEXT.filter(lambda t: (t + close).find(close) == len(t)))
    return "[" + "=" * level + "[" + body + close


@st.composite
def comment(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return "-- " + draw(st.text(alphabet="ab }{][=#$;'\"", max_size=12)) + "\n"
    return "--" + draw(long_bracket())


def table(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(children, max_size=3).map(lambda xs: "{ " + " , ".join(xs) + " }")


ATOMS = st.one_of(NAMES, quoted(), long_bracket(),
                  st.integers(0, 999).map(str), st.just("#t"), st.just("t[1]"))
VALUES = st.recursive(ATOMS, table, max_leaves=8)
PIECES = st.one_of(VALUES, comment(), NAMES.map(lambda n: f"local {n} = 1"))
BODY = st.lists(PIECES, max_size=8).map(lambda ps: " " + "\n ".join(ps) + "\n")

_SHARED = tempfile.mkdtemp(prefix="rw-lua-prop-")


def _round_trip(body: str) -> None:
    block = http_block(parse_text(HEAD + body + TAIL, _SHARED))
    assert [s["directive"] for s in block] == ["init_by_lua_block", "after_directive"], block
    assert block[0]["args"] == [body]
    assert block[1]["args"] == ["1", "two"]
    assert block[1]["line"] == expected_next_line(body)
    assert lua.tokens(body)  # and the lexer reads it as Lua on its own


PADDING = "\n" + " " * 80 + "\n"  # more than the 64 characters the lexer peeks after '['


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(BODY)
def test_property_lua_block_round_trips_when_padded(body: str) -> None:
    """Everything but the look-ahead bug: the body ends with 80 blank characters."""
    _round_trip(body + PADDING)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@example(" t[1] ")
@given(BODY)
def test_property_lua_block_round_trips(body: str) -> None:
    _round_trip(body)


# -- lua.scan ------------------------------------------------------------------------------------

def calls(code: str, line: int = 1) -> list[tuple[str, int, str, bool, bool]]:
    facts = lua.scan(code, line)
    assert facts.error is None, facts.error
    return [(c.name, c.line, c.argument, c.conditional, c.looped) for c in facts.calls]


SCAN = [
    pytest.param("local b = require 'ngx.balancer'\nb.set_more_tries(1)\n",
                 [("set_more_tries", 2, "1", False, False)], id="unconditional"),
    pytest.param("local b = require 'ngx.balancer'\nif not ngx.ctx.tried then\n"
                 "  ngx.ctx.tried = true\n  b.set_more_tries(1)\nend\nb.set_more_tries(2)\n",
                 [("set_more_tries", 4, "1", True, False),
                  ("set_more_tries", 6, "2", False, False)], id="inside if, then after it"),
    pytest.param("if a then x() elseif b then\n  b.set_more_tries(1)\nelse\n"
                 "  b.set_more_tries(2)\nend\n",
                 [("set_more_tries", 2, "1", True, False),
                  ("set_more_tries", 4, "2", True, False)], id="elseif and else"),
    pytest.param("local function add(n)\n  balancer.set_more_tries(n)\nend\nadd(1)\n",
                 [("set_more_tries", 2, "n", False, False)], id="in a function body"),
    pytest.param("if x then\n  local f = function()\n    b.set_more_tries(1)\n  end\n  f()\nend\n",
                 [("set_more_tries", 3, "1", False, False)],
                 id="function defined in an if: its body is its own scope"),
    pytest.param("local function add()\n  if budget > 0 then b.set_more_tries(1) end\nend\n",
                 [("set_more_tries", 2, "1", True, False)], id="if in a function body"),
    pytest.param("for i = 1, 3 do\n  b.set_current_peer(host, 80)\nend\n",
                 [("set_current_peer", 2, "host", False, True)], id="for loop"),
    pytest.param("for _, p in ipairs(peers) do b.set_more_tries(1) end\n",
                 [("set_more_tries", 1, "1", False, True)], id="generic for"),
    pytest.param("while true do\n  b.set_more_tries(2)\nend\n",
                 [("set_more_tries", 2, "2", False, True)], id="while loop"),
    pytest.param("repeat\n  b.set_more_tries(3)\nuntil done\nb.set_more_tries(4)\n",
                 [("set_more_tries", 2, "3", False, True),
                  ("set_more_tries", 4, "4", False, False)], id="repeat until"),
    pytest.param("do\n  b.set_more_tries(1)\nend\n", [("set_more_tries", 2, "1", False, False)],
                 id="a do block is not a condition"),
    pytest.param("for i = 1, 2 do if i > 1 then b.set_more_tries(1) end end\n",
                 [("set_more_tries", 1, "1", True, True)], id="if in a loop"),
    pytest.param("-- b.set_more_tries(5)\n--[[ b.set_more_tries(6)\n]] --[==[\n"
                 "b.set_more_tries(7) ]==]\nlocal s = 'b.set_more_tries(8)' .. "
                 "\"set_current_peer(1)\" .. [[ set_more_tries(9) ]]\n", [],
                 id="comments and strings do not count"),
    pytest.param("b.set_more_tries(1)\nbalancer.set_more_tries(n)\nbal:set_more_tries(n + 1)\n"
                 "require('ngx.balancer').set_more_tries(2)\nngx_balancer.set_more_tries (3)\n",
                 [("set_more_tries", 1, "1", False, False),
                  ("set_more_tries", 2, "n", False, False),
                  ("set_more_tries", 3, "n + 1", False, False),
                  ("set_more_tries", 4, "2", False, False),
                  ("set_more_tries", 5, "3", False, False)], id="call forms"),
    pytest.param("local t = { set_more_tries = 1 }\nlocal x = b.set_more_tries\n"
                 "local function set_more_tries(n) end\n", [],
                 id="a key, a reference and a local definition are not calls"),
]


@pytest.mark.parametrize(("code", "expected"), SCAN)
def test_scan(code: str, expected: list[tuple[str, int, str, bool, bool]]) -> None:
    assert calls(code) == expected


def test_scan_counts_lines_from_the_first_line_given() -> None:
    """A block's code is scanned with the line of its directive: the calls' lines are the
    configuration file's."""
    assert calls("\n  if x then\n    b.set_more_tries(1)\n  end\n", 40) == [
        ("set_more_tries", 42, "1", True, False)]


def test_scan_method_definition_is_not_a_call() -> None:
    code = ("local M = {}\nfunction M.set_more_tries(n)\n"
            "  if ngx.ctx.budget > 0 then ngx_balancer.set_more_tries(n) end\nend\n")
    assert calls(code) == [("set_more_tries", 3, "n", True, False)]


def test_scan_requires() -> None:
    code = ("local a = require 'ngx.balancer'\nlocal b = require \"mylb.core\"\n"
            "local c = require('balancer')\nlocal d = require(\"x.y.z\")\n"
            "-- require 'commented'\nlocal e = 'require \"in_string\"'\n")
    facts = lua.scan(code)
    assert facts.requires == ["ngx.balancer", "mylb.core", "balancer", "x.y.z"]


def test_scan_require_with_a_long_string() -> None:
    assert lua.scan("local m = require [[mylb]]\n").requires == ["mylb"]


@pytest.mark.parametrize("code", ["local s = [[ never closed\n", "local s = 'open\n",
                                  "--[==[ long comment ]]\n"])
def test_scan_of_broken_code_reports_the_error(code: str) -> None:
    facts = lua.scan(code)
    assert facts.error is not None
    assert facts.calls == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(PIECES, st.booleans()), max_size=8))
def test_property_scan_counts_only_real_calls(pieces: list[tuple[str, bool]]) -> None:
    """Pieces from strings, comments and tables with a real call after some of them: scan
    finds exactly those calls, on their lines, however the pieces hide 'set_more_tries'."""
    lines: list[str] = []
    expected: list[int] = []
    for piece, real in pieces:
        lines.append(piece.replace("\n", " ") if not piece.startswith("--[") else piece)
        lines.append("x = 'b.set_more_tries(9)' -- b.set_more_tries(8)")
        if real:
            lines.append("b.set_more_tries(1)")
            expected.append(len("\n".join(lines).split("\n")))
    code = "\n".join(lines) + "\n"
    found = lua.scan(code)
    assert found.error is None, (code, found.error)
    assert [c.line for c in found.calls] == expected, code
    assert all(c.name == "set_more_tries" and c.argument == "1" for c in found.calls)
