"""``retrywatch lint`` on nginx configurations: includes, inheritance, Lua balancers (inline,
files, required modules), snippets, the rules' outcomes, broken inputs, the command line,
SARIF, and the words it shares with the live alerts' diagnosis.

Expected findings are written in the configurations themselves: a line ending with
``#! <code> <severity>`` is where a finding must point (its file and line); every other line
must have none. crossplane drops comments, so the markers do not change what is linted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema  # type: ignore[import-untyped]  # via kubernetes-validate (dev)
import pytest
from click.testing import CliRunner, Result
from helpers import aggregated, alerts_of, stream_refused
from reference.detector import Detector

from retrywatch.cli import main
from retrywatch.detect import diagnosis as diagnosis_module
from retrywatch.detect.remedies import doc_page, fix
from retrywatch.lint import RULES, Finding, LintResult, Severity, lint, nginx_conf
from retrywatch.lint.model import Rule
from retrywatch.lint.nginx_conf import default_root, load
from retrywatch.lint.rules import routes

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lint"
DOCS = ROOT / "docs" / "lint"
SAMPLE_STORM = ROOT / "sample_logs" / "scenario-http-lua-storm.error.log.gz"

#: An upstream whose Lua balancer adds a try on every invocation.
LUA_UP = """\
    upstream lb {
        server 127.0.0.1:9;
        balancer_by_lua_block {
            local b = require "ngx.balancer"
            b.set_more_tries(1)
            b.set_current_peer("127.0.0.1", 9)
        }
    }
"""
ONE_ROUTE = "    server { listen 80; location / { proxy_pass http://lb; } }"
MARK = re.compile(r"#!\s*(\w+)\s+(error|warning|note)\s*$")

Row = tuple[str, str, str, int | None]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def rows(result: LintResult, root: Path) -> list[Row]:
    """(code, severity, file relative to root, line) of every finding, sorted."""
    return sorted((f.code, f.severity.label, os.path.relpath(f.location.file, root),
                   f.location.line) for f in result.findings)


def marked(root: Path, names: list[str] | None = None) -> list[Row]:
    """The findings the ``#!`` markers of the files under root ask for."""
    out: list[Row] = []
    for path in sorted(root.rglob("*")):
        rel = os.path.relpath(path, root)
        if not path.is_file() or (names is not None and rel not in names):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if m := MARK.search(line):
                out.append((m.group(1), m.group(2), rel, number))
    return sorted(out)


def check(root: Path, files: dict[str, str], main_file: str = "nginx.conf",
          **options: object) -> LintResult:
    """Write the files, lint main_file, and compare with the markers of all the files."""
    write(root, files)
    result = lint([str(root / main_file)], **options)  # type: ignore[arg-type]
    assert rows(result, root) == marked(root), [f.message for f in result.findings]
    return result


def http(body: str, upstreams: str = LUA_UP) -> str:
    return "events {}\nhttp {\n" + upstreams + body + "}\n"


def stream(body: str, upstreams: str = LUA_UP) -> str:
    return "events {}\nstream {\n" + upstreams + body + "}\n"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["lint", *args])


def no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert "Traceback" not in result.output


# -- includes ----------------------------------------------------------------------------------

def test_includes_resolve_from_the_main_files_folder_with_globs(tmp_path: Path) -> None:
    """``include`` paths are relative to the main file's folder (nginx's conf prefix), also
    inside included files; a glob includes every match; a file included in several
    locations counts at each site, with the inheritance of that site."""
    result = check(tmp_path, {
        "etc/nginx.conf": http("    include conf.d/*.conf;\n"),
        "etc/conf.d/a.conf": (
            "server {\n    listen 80;\n"
            "    location /a { include snippets/pass.conf; }\n"
            "    location /b { include snippets/pass.conf; }\n"
            "    location /c { proxy_next_upstream_tries 3; include snippets/pass.conf; }\n"
            "}\n"),
        "etc/conf.d/b.conf": ("server {\n    listen 81;\n    location /d {\n"
                              "        include snippets/pass.conf;\n    }\n}\n"),
        "etc/snippets/pass.conf": ("# shared by four locations\n"
                                   "proxy_pass http://lb;  #! http_retry_loop error\n"),
        # a decoy: relative to the including file's folder, which nginx does not use
        "etc/conf.d/snippets/pass.conf": "proxy_pass http://decoy;\n",
    }, "etc/nginx.conf")
    (finding,) = result.findings
    assert finding.facts["places"] == 3
    assert "applies to 3 places" in finding.message
    for scope in ("location /a", "location /b", "location /d"):
        assert scope in finding.message
    assert "location /c" not in finding.message
    assert sorted(os.path.relpath(f, tmp_path) for f in result.files) == [
        "etc/conf.d/a.conf", "etc/conf.d/b.conf", "etc/nginx.conf", "etc/snippets/pass.conf"]


def test_missing_include_is_a_note_not_a_crash(tmp_path: Path) -> None:
    check(tmp_path, {"nginx.conf": http(
        "    include missing.conf;  #! lint_input note\n"
        "    include nothing/*.conf;  #! lint_input note\n"
        + ONE_ROUTE + "  #! http_retry_loop error\n")})
    (glob,) = [f for f in lint([str(tmp_path / "nginx.conf")]).findings
               if "nothing/" in f.message]
    assert glob.message.startswith("include nothing/*.conf matches no file")
    result = cli(str(tmp_path / "nginx.conf"))
    assert result.exit_code == 1  # the error finding; the note does not make it 2
    no_traceback(result)


def test_include_cycle_is_a_lint_input_error(tmp_path: Path) -> None:
    """The cycle ends (nginx itself would crash on it) and is the only finding."""
    write(tmp_path, {
        "nginx.conf": http("    include a.conf;\n", upstreams=""),
        "a.conf": "include b.conf;\nserver { listen 81; location / { return 204; } }\n",
        "b.conf": "include a.conf;\n",
    })
    result = lint([str(tmp_path / "nginx.conf")])
    assert [(f.code, f.severity) for f in result.findings] == [("lint_input", Severity.ERROR)]
    assert os.path.basename(result.findings[0].location.file) in ("a.conf", "b.conf")


def _lint_quietly(path: str) -> None:
    lint([path])


def test_branching_include_cycle_terminates_quickly(tmp_path: Path) -> None:
    line = "include conf.d/*.conf;\nserver { listen 81; location / { return 204; } }\n"
    write(tmp_path, {"nginx.conf": http("    include conf.d/*.conf;\n", upstreams=""),
                     "conf.d/a.conf": line, "conf.d/b.conf": line})
    process = multiprocessing.get_context("fork").Process(
        target=_lint_quietly, args=(str(tmp_path / "nginx.conf"),))
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork() with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        process.start()
    process.join(3.0)
    finished = not process.is_alive()
    if not finished:
        process.kill()
        process.join()
    assert finished, "lint still running after 3 s"


# -- inheritance --------------------------------------------------------------------------------

INHERITANCE = {
    "http level": http("""\
    proxy_next_upstream_tries 3;
    server { listen 80; location / { proxy_pass http://lb; } }
"""),
    "server level": http("""\
    server {
        listen 80;
        proxy_next_upstream_tries 3;
        location / { proxy_pass http://lb; }
    }
"""),
    "location and nested location": http("""\
    server {
        listen 80;
        location / {
            proxy_next_upstream_tries 3;
            proxy_pass http://lb;
            location /nested { proxy_pass http://lb; }
            location /nested2 { location /deeper { proxy_pass http://lb; } }
        }
        location /sibling { proxy_pass http://lb; }  #! http_retry_loop error
        location /if {
            proxy_next_upstream_tries 3;
            if ($arg_x) { proxy_pass http://lb; }
        }
        location /if-unset { if ($arg_x) { proxy_pass http://lb; } }  #! http_retry_loop error
    }
"""),
    "a location overrides http": http("""\
    proxy_next_upstream_tries 3;
    server {
        listen 80;
        location /zero {
            proxy_next_upstream_tries 0;  #! http_retry_loop error
            proxy_pass http://lb;
        }
        location /inherits { proxy_pass http://lb; }
    }
"""),
    "a location bounds what http leaves unlimited": http("""\
    proxy_next_upstream_tries 0;
    server {
        listen 80;
        location /bounded { proxy_next_upstream_tries 2; proxy_pass http://lb; }
    }
"""),
    "next_upstream off": http("""\
    server {
        listen 80;
        proxy_next_upstream off;
        location /off { proxy_pass http://lb; }
        location /on {
            proxy_next_upstream error timeout;
            proxy_pass http://lb;  #! http_retry_loop error
        }
        location /grpc-off { grpc_next_upstream off; grpc_pass grpc://lb; }
    }
"""),
    "each module its own directive": http("""\
    proxy_next_upstream_tries 3;
    server {
        listen 80;
        location /grpc { grpc_pass grpc://lb; }  #! http_retry_loop error
        location /grpc-ok { grpc_next_upstream_tries 3; grpc_pass grpcs://lb; }
        location /fcgi { fastcgi_pass lb; }  #! http_retry_loop error
        location /fcgi-ok { fastcgi_next_upstream_tries 3; fastcgi_pass lb; }
        location /uwsgi { uwsgi_pass uwsgi://lb; }  #! http_retry_loop error
        location /uwsgi-ok { uwsgi_next_upstream_tries 3; uwsgi_pass lb; }
        location /scgi { scgi_pass lb; }  #! http_retry_loop error
        location /scgi-ok { scgi_next_upstream_tries 3; scgi_pass lb; }
        location /memcached { memcached_pass lb; }  #! http_retry_loop error
        location /memcached-ok { memcached_next_upstream_tries 3; memcached_pass lb; }
        location /proxy { proxy_pass http://lb/path; }
    }
"""),
    "stream level": stream("""\
    proxy_next_upstream_tries 3;
    server { listen 9000; proxy_pass lb; }
"""),
    "stream servers": stream("""\
    server { listen 9000; proxy_pass lb; }  #! stream_retry_loop error
    server { listen 9001; proxy_next_upstream_tries 3; proxy_pass lb; }
    server { listen 9002; proxy_next_upstream off; proxy_pass lb; }
    server {
        listen 9003;
        proxy_next_upstream_tries 0;  #! stream_retry_loop error
        proxy_pass lb;
    }
"""),
    "http and stream upstreams of the same name": """\
events {}
http {
    upstream lb { server 127.0.0.1:9; }
    server { listen 80; location / { proxy_pass http://lb; } }
}
stream {
""" + LUA_UP + """\
    server { listen 9000; proxy_pass lb; }  #! stream_retry_loop error
}
""",
}


@pytest.mark.parametrize("conf", list(INHERITANCE.values()), ids=list(INHERITANCE))
def test_inheritance(tmp_path: Path, conf: str) -> None:
    check(tmp_path, {"nginx.conf": conf})


def test_upstream_names_are_case_insensitive(tmp_path: Path) -> None:
    route = ONE_ROUTE.replace("http://lb", "http://LB")
    check(tmp_path, {"nginx.conf": http(route + "  #! http_retry_loop error\n")})


# -- Lua balancers in files and modules -------------------------------------------------------

FILE_UP = """\
    upstream lb {
        server 127.0.0.1:9;
        balancer_by_lua_file %s;
    }
"""
ROUTE = "    server { listen 80; location / { proxy_pass http://lb; } }  #! http_retry_loop %s\n"


def test_balancer_file_is_read_relative_to_prefix(tmp_path: Path) -> None:
    write(tmp_path, {
        "conf/nginx.conf": http(ROUTE % "error", FILE_UP % "lua/balancer.lua"),
        "prefix/lua/balancer.lua": ("local b = require 'ngx.balancer'\n\n"
                                    "b.set_more_tries(1)\n"),
    })
    found = lint([str(tmp_path / "conf/nginx.conf")], prefix=str(tmp_path / "prefix"))
    assert rows(found, tmp_path) == marked(tmp_path, ["conf/nginx.conf"])
    (finding,) = found.findings
    call = finding.related[0]
    assert (call.file, call.line) == (str(tmp_path / "prefix/lua/balancer.lua"), 3)
    # without --prefix the file is looked for beside nginx.conf and one folder up: not found
    (unseen,) = lint([str(tmp_path / "conf/nginx.conf")]).findings
    assert (unseen.code, unseen.severity) == ("http_retry_loop", Severity.NOTE)
    assert "lua/balancer.lua" in unseen.message
    # the CLI option
    result = cli("--prefix", str(tmp_path / "prefix"), "--format", "json",
                 str(tmp_path / "conf/nginx.conf"))
    assert result.exit_code == 1
    (f,) = json.loads(result.stdout)["findings"]
    assert (f["code"], f["severity"]) == ("http_retry_loop", "error")


def test_balancer_file_default_prefix_is_the_parent_folder(tmp_path: Path) -> None:
    check(tmp_path, {
        "conf/nginx.conf": http(ROUTE % "error", FILE_UP % "lua/balancer.lua"),
        "lua/balancer.lua": "require('ngx.balancer').set_more_tries(1)\n",
    }, "conf/nginx.conf")


def test_required_module_found_through_lua_package_path(tmp_path: Path) -> None:
    result = check(tmp_path, {
        "conf/nginx.conf": http("    lua_package_path 'lualib/?.lua;;';\n" + ROUTE % "error",
                                FILE_UP % "lua/balancer.lua"),
        "lua/balancer.lua": "local m = require 'mylb.core'\nm.go()\n",
        "lualib/mylb/core.lua": ("local M = {}\nfunction M.go()\n"
                                 "  local b = require('ngx.balancer')\n"
                                 "  b.set_more_tries(1)\nend\nreturn M\n"),
    }, "conf/nginx.conf")
    call = result.findings[0].related[0]
    assert (call.file, call.line) == (str(tmp_path / "lualib/mylb/core.lua"), 4)


def test_required_module_with_a_conditional_call_is_a_warning(tmp_path: Path) -> None:
    check(tmp_path, {
        "nginx.conf": http("    lua_package_path 'lualib/?.lua;;';\n" + ROUTE % "warning",
                           FILE_UP % "lua/balancer.lua"),
        "lua/balancer.lua": "local m = require 'mylb'\nm.go()\n",
        "lualib/mylb.lua": ("local M = {}\nfunction M.go()\n  if ngx.ctx.budget > 0 then\n"
                            "    require('ngx.balancer').set_more_tries(1)\n  end\nend\n"
                            "return M\n"),
    })


@pytest.mark.parametrize(("name", "content"), [
    ("lua/dir.lua/", None),
    ("lua/broken.lua", "local s = [[ never closed\n"),
    ("lua/missing.lua", None),
])
def test_unreadable_lua_file_is_a_note(tmp_path: Path, name: str, content: str | None) -> None:
    """A Lua file that cannot be read (a folder, code that does not tokenise, a missing one):
    a note that names it, never a crash. (Tests run as root, where chmod 000 reads fine.)"""
    if content is not None:
        write(tmp_path, {name: content})
    elif name.endswith("/"):
        (tmp_path / name).mkdir(parents=True)
    path = name.rstrip("/")
    result = check(tmp_path, {"nginx.conf": http(ROUTE % "note", FILE_UP % path)},
                   prefix=str(tmp_path))
    assert path in result.findings[0].message


def test_a_comment_naming_balancer_balance_is_not_ingress_nginx(tmp_path: Path) -> None:
    up = """\
    upstream lb {
        server 127.0.0.1:9;
        balancer_by_lua_block {
            -- unlike balancer.balance() of ingress-nginx, this one keeps a budget
            local b = require "ngx.balancer"
            if ngx.ctx.budget > 0 then b.set_more_tries(1) end
        }
    }
"""
    check(tmp_path, {"nginx.conf": http(ROUTE % "warning", up)})


def test_own_module_named_by_a_balancer_variable_is_not_ingress_nginx(tmp_path: Path) -> None:
    up = """\
    upstream lb {
        server 127.0.0.1:9;
        balancer_by_lua_block {
            local balancer = require "mylb"
            balancer.balance()
        }
    }
"""
    check(tmp_path, {
        "nginx.conf": http("    lua_package_path 'lua/?.lua;;';\n" + ROUTE % "warning", up),
        "lua/mylb.lua": ("local M = {}\nfunction M.balance()\n  if ngx.ctx.budget > 0 then\n"
                         "    require('ngx.balancer').set_more_tries(1)\n  end\nend\n"
                         "return M\n"),
    })


def test_wrapper_definition_is_not_an_unconditional_call(tmp_path: Path) -> None:
    check(tmp_path, {
        "nginx.conf": http("    lua_package_path 'lua/?.lua;;';\n" + ROUTE % "warning",
                           FILE_UP % "lua/balancer.lua"),
        "lua/balancer.lua": "local w = require 'wrap'\nw.set_more_tries(1)\n",
        "lua/wrap.lua": ("local ngx_balancer = require 'ngx.balancer'\nlocal M = {}\n"
                         "function M.set_more_tries(n)\n"
                         "  if ngx.ctx.budget > 0 then ngx_balancer.set_more_tries(n) end\n"
                         "end\nreturn M\n"),
    }, prefix=str(tmp_path))


# -- snippets linted alone -------------------------------------------------------------------

def test_http_snippet_alone(tmp_path: Path) -> None:
    check(tmp_path, {"conf.d/app.conf": LUA_UP + """\
server {
    listen 80;
    location / { proxy_pass http://lb; }  #! http_retry_loop error
    location /b { proxy_next_upstream_tries 3; proxy_pass http://lb; }
}
"""}, "conf.d/app.conf")


@pytest.mark.parametrize("name", ["conf.d/tcp.conf", "stream/tcp.conf"])
def test_stream_snippet_alone(tmp_path: Path, name: str) -> None:
    check(tmp_path, {name: LUA_UP + """\
server {
    listen 9000;
    proxy_pass lb;  #! stream_retry_loop error
}
"""}, name)


def test_stream_snippet_found_by_its_folder(tmp_path: Path) -> None:
    """A stream snippet whose servers pass nothing directly is told by its folder name."""
    check(tmp_path, {"stream/upstreams.conf": LUA_UP, "stream/servers.conf": """\
include upstreams.conf;
server {
    listen 9000;
    preread_by_lua_block { ngx.var.x = 1 }
    proxy_pass lb;  #! stream_retry_loop error
}
"""}, "stream/servers.conf")


# -- where files are found: the root, folders, pipes ----------------------------------------------

def test_absolute_includes_are_read_under_the_root(tmp_path: Path) -> None:
    """A repository's copy of a Debian tree: ``include /etc/nginx/conf.d/*.conf;`` means the
    copy's conf.d (the part of the path before /etc/nginx/ is the root), not this machine's
    /etc/nginx."""
    result = check(tmp_path, {
        "repo/etc/nginx/nginx.conf": http("    include /etc/nginx/conf.d/*.conf;\n"),
        "repo/etc/nginx/conf.d/app.conf": ONE_ROUTE + "  #! http_retry_loop error\n",
    }, "repo/etc/nginx/nginx.conf")
    assert sorted(os.path.relpath(f, tmp_path) for f in result.files) == [
        "repo/etc/nginx/conf.d/app.conf", "repo/etc/nginx/nginx.conf"]
    config = load(str(tmp_path / "repo/etc/nginx/nginx.conf"))
    assert config.root_dir == str(tmp_path / "repo")
    assert config.rooted("/etc/nginx/lua/b.lua") == str(tmp_path / "repo/etc/nginx/lua/b.lua")
    assert default_root("/etc/nginx/nginx.conf") == "/"
    assert default_root("/srv/repo/etc/nginx/sites-enabled/a") == "/srv/repo"
    assert default_root("/srv/nginx/nginx.conf") == "/"
    assert load(str(tmp_path / "x.conf")).root_dir == "/"


def test_links_to_absolute_paths_are_followed_under_the_root(tmp_path: Path) -> None:
    """Debian's ``sites-enabled/default`` is a link to ``/etc/nginx/sites-available/default``:
    in a copy, the copy's file (this machine's may not exist, or be another)."""
    etc = tmp_path / "repo/etc/nginx"
    write(tmp_path, {"repo/etc/nginx/nginx.conf": http("    include /etc/nginx/sites-enabled/*;\n"),
                     "repo/etc/nginx/sites-available/default": ONE_ROUTE + "\n"})
    (etc / "sites-enabled").mkdir()
    (etc / "sites-enabled/default").symlink_to("/etc/nginx/sites-available/default")
    for given in ([str(etc / "nginx.conf")], [str(tmp_path / "repo")]):
        assert rows(lint(given), tmp_path) == [
            ("http_retry_loop", "error", "repo/etc/nginx/sites-enabled/default", 1)]


def test_root_given(tmp_path: Path) -> None:
    """``root=``: where absolute includes (and, through ``Config.root_dir``, absolute Lua
    paths) are found, whatever the main file's path."""
    write(tmp_path, {"tree/nginx.conf": http("    include /srv/conf/*.conf;\n"
                                             "    include /srv/conf/missing.conf;\n"),
                     "image/srv/conf/app.conf": ONE_ROUTE + "\n"})
    main_file = str(tmp_path / "tree/nginx.conf")
    found = lint([main_file], root=str(tmp_path / "image"))
    assert rows(found, tmp_path) == [("http_retry_loop", "error", "image/srv/conf/app.conf", 1),
                                     ("lint_input", "note", "tree/nginx.conf", 12)]
    assert load(main_file, root=str(tmp_path / "image")).root_dir == str(tmp_path / "image")
    assert rows(lint([main_file], root=str(tmp_path / "elsewhere")), tmp_path) == [
        ("lint_input", "note", "tree/nginx.conf", 11),
        ("lint_input", "note", "tree/nginx.conf", 12)]


def test_contexts_are_checked_at_each_include_site(tmp_path: Path) -> None:
    """A file included in a location and in http is checked at both sites: nginx rejects
    its ``return`` in http, although the location takes it."""
    check(tmp_path, {
        "nginx.conf": http("    include ret.conf;\n"
                           "    server { listen 80; location / { include ret.conf; } }\n",
                           upstreams=""),
        "ret.conf": "return 204;  #! lint_input error\n",
    })
    assert nginx_conf._MAX_NODES == 5_000_000


def test_folder_snippets_are_one_http_context(tmp_path: Path) -> None:
    """A folder of conf.d files: the upstream of one and the location of another are one
    configuration, as nginx's ``include conf.d/*.conf;`` reads them."""
    write(tmp_path, {"conf.d/upstreams.conf": LUA_UP,
                     "conf.d/site.conf": ONE_ROUTE + "  #! http_retry_loop error\n",
                     "conf.d/stream/up.conf": LUA_UP,
                     "conf.d/stream/tcp.conf": "server { listen 9000; proxy_pass lb; }"
                                               "  #! stream_retry_loop error\n"})
    result = lint([str(tmp_path)])
    assert rows(result, tmp_path) == marked(tmp_path), [f.message for f in result.findings]


def test_folder_with_an_nginx_conf_lints_the_other_confs_too(tmp_path: Path) -> None:
    """Each nginx.conf with its includes (a file it includes is not linted again), then the
    *.conf files nothing included: a whole configuration as its own root."""
    write(tmp_path, {
        "a/nginx.conf": http("    include conf.d/*.conf;\n"),
        "a/conf.d/app.conf": ONE_ROUTE + "  #! http_retry_loop error\n",
        "b/other.conf": http(ONE_ROUTE + "  #! http_retry_loop error\n"),
        "b/unused.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n",
    })
    result = lint([str(tmp_path)])
    assert rows(result, tmp_path) == marked(tmp_path), [f.message for f in result.findings]
    # a YAML file named on its own still says that nothing in it was read
    assert rows(lint([str(tmp_path / "b/unused.yaml")]), tmp_path) == [
        ("lint_input", "note", "b/unused.yaml", None)]


def test_standard_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-``: standard input, named ``-`` in the findings, its relative includes from the
    working directory."""
    write(tmp_path, {"conf.d/app.conf": ONE_ROUTE + "\n"})
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["lint", "--format", "json", "-"],
                             input=http("    include conf.d/*.conf;\n"))
    assert out.exit_code == 1, out.output
    findings = json.loads(out.stdout)["findings"]
    assert [(f["code"], f["file"]) for f in findings] == [("http_retry_loop", "conf.d/app.conf")]
    out = CliRunner().invoke(main, ["lint", "-"], input=http("    server {\n"))
    assert out.exit_code == 2
    assert out.stderr.startswith("retrywatch lint: -:"), out.stderr
    assert "retrywatch-lint-" not in out.output


def test_pipes_and_fifos_are_read_once(tmp_path: Path) -> None:
    """``cat x | retrywatch lint /dev/stdin`` and ``<(cat x)`` are linted from what they
    give; a FIFO is read once, and one nothing writes to is an error, not a hang."""
    import shlex
    import subprocess
    import threading

    conf = http(ONE_ROUTE + "\n")
    (tmp_path / "a.conf").write_text(conf)
    command = [sys.executable, "-m", "retrywatch", "lint"]
    done = subprocess.run([*command, "/dev/stdin"], input=conf, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "/dev/stdin:" in done.stdout and "http_retry_loop" in done.stdout
    done = subprocess.run(["bash", "-c", f"{shlex.join(command)} <(cat a.conf)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(conf,), daemon=True)
    writer.start()
    config = load(str(fifo), content=nginx_conf.read_bytes(str(fifo)))
    writer.join(5)
    assert [r.target for r in routes(config)] == ["lb"]
    script = ("import sys; from retrywatch.lint import lint, nginx_conf; "
              "nginx_conf.IDLE_SECONDS = 0.2; print([(f.code, f.severity.label, f.message) "
              "for f in lint([sys.argv[1]]).findings])")
    done = subprocess.run([sys.executable, "-c", script, str(fifo)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert "('lint_input', 'error', 'nothing to read for 0.2 s" in done.stdout, done.stderr


def test_kubectl_json_is_read_as_kubernetes_objects(tmp_path: Path) -> None:
    """``kubectl get … -o json``: a .json file, or JSON without the extension, is read as
    Kubernetes objects (with their lines), not as nginx."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
        "data": {"proxy-next-upstream-tries": "0"}}]}, indent=4)
    line = next(n for n, text in enumerate(body.splitlines(), 1) if "tries" in text)
    for name in ("cm.json", "cm.txt"):
        (tmp_path / name).write_text(body)
        assert rows(lint([str(tmp_path / name)]), tmp_path) == [
            ("http_retry_loop", "error", name, line)]
    (tmp_path / "tabs.json").write_text(json.dumps(json.loads(body), indent="\t"))
    assert [f.code for f in lint([str(tmp_path / "tabs.json")]).findings] == ["http_retry_loop"]


VARIABLE_UPS = LUA_UP + """\
    upstream fine { server 127.0.0.1:10; }
"""


def test_variable_pass_judges_each_value(tmp_path: Path) -> None:
    """``proxy_pass http://$backend;``: each upstream a ``map`` or a ``set`` may give the
    variable is judged, and the finding says through which variable."""
    result = check(tmp_path, {"nginx.conf": http("""\
    map $http_host $backend {
        hostnames;
        default fine;
        api.example.com lb;
    }
    server {
        listen 80;
        location / { proxy_pass http://$backend; }  #! http_retry_loop error
        location /set {
            set $pool fine;
            if ($arg_x) { set $pool lb; }
            proxy_pass http://$pool/x;  #! http_retry_loop error
        }
        location /fine { set $pool fine; proxy_pass http://$pool; }
    }
""", VARIABLE_UPS)})
    messages = sorted(f.message for f in result.findings)
    assert "location / through $backend passes to upstream lb" in messages[0]
    assert "location /set through $pool passes to upstream lb" in messages[1]
    config = load(str(tmp_path / "nginx.conf"))
    assert sorted((r.scope(), r.target, r.variable) for r in routes(config)) == [
        ("location / through $backend", "fine", "$backend"),
        ("location / through $backend", "lb", "$backend"),
        ("location /fine through $pool", "fine", "$pool"),
        ("location /set through $pool", "fine", "$pool"),
        ("location /set through $pool", "lb", "$pool")]


def test_apisix_and_stream_variables(tmp_path: Path) -> None:
    """APISIX's ``$upstream_scheme://apisix_backend$upstream_uri`` names apisix_backend; a
    stream ``proxy_pass $up;`` takes the values of its map."""
    write(tmp_path, {"apisix.conf": http("""\
    upstream apisix_backend {
        server 0.0.0.1;
        balancer_by_lua_block { require("ngx.balancer").set_more_tries(1) }
    }
    server {
        listen 80;
        location / {
            proxy_pass $upstream_scheme://apisix_backend$upstream_uri;  #! http_retry_loop error
        }
    }
""", upstreams=""), "stream.conf": stream("""\
    map $ssl_preread_server_name $up {
        default fine;
        db.example.com lb;
    }
    server { listen 9000; ssl_preread on; proxy_pass $up; }  #! stream_retry_loop error
""", VARIABLE_UPS)})
    assert rows(lint([str(tmp_path / "apisix.conf"), str(tmp_path / "stream.conf")]),
                tmp_path) == marked(tmp_path)
    (finding,) = lint([str(tmp_path / "stream.conf")]).findings
    assert "through $up passes to upstream lb" in finding.message


def test_byte_order_mark_is_an_error(tmp_path: Path) -> None:
    """nginx rejects a file that starts with a UTF-8 BOM (``unknown directive
    "\\ufeffevents"``): a lint_input error at line 1, also in an included file."""
    (tmp_path / "nginx.conf").write_bytes(b"\xef\xbb\xbf" + http(ONE_ROUTE + "\n").encode())
    result = lint([str(tmp_path / "nginx.conf")])
    assert rows(result, tmp_path) == [("http_retry_loop", "error", "nginx.conf", 11),
                                      ("lint_input", "error", "nginx.conf", 1)]
    assert "byte order mark" in result.input_errors[0].message
    assert '"\\ufeffevents"' in result.input_errors[0].message
    assert cli(str(tmp_path / "nginx.conf")).exit_code == 2
    write(tmp_path, {"main.conf": http("    include inc.conf;\n")})
    (tmp_path / "inc.conf").write_bytes(b"\xef\xbb\xbf" + ONE_ROUTE.encode())
    assert ("lint_input", "error", "inc.conf", 1) in rows(lint([str(tmp_path / "main.conf")]),
                                                          tmp_path)


@pytest.mark.parametrize(("name", "code"), [
    ("stream/project/conf.d/app.conf", "http_retry_loop"),
    ("streaming/app.conf", "http_retry_loop"),
    ("streams-enabled/app.conf", "stream_retry_loop"),
    ("stream.d/app.conf", "stream_retry_loop"),
])
def test_stream_folder_is_only_the_parent(tmp_path: Path, name: str, code: str) -> None:
    """Only the file's own folder, named exactly stream, stream.d, streams-enabled or
    streams-available, makes a snippet without a direct proxy_pass a stream one."""
    body = LUA_UP + "server {\n    listen 80;\n    preread_by_lua_block { ngx.var.x = 1 }\n"
    body += "    location / { proxy_pass lb; }\n" if code == "http_retry_loop" \
        else "    proxy_pass lb;\n"
    write(tmp_path, {name: body + "}\n"})
    result = lint([str(tmp_path / name)], prefix=str(tmp_path))
    assert [f.code for f in result.findings if f.severity >= Severity.WARNING] == [code]


def test_lua_block_without_a_space_is_read(tmp_path: Path) -> None:
    """``balancer_by_lua_block{`` (no space): nginx reads it, and so does lint (the balancer
    is judged, no lint_input); a glued name in a comment changes nothing."""
    check(tmp_path, {"nginx.conf": http(ONE_ROUTE + "  #! http_retry_loop error\n", """\
    # content_by_lua_block{ is fine in a comment
    upstream lb {
        server 127.0.0.1:9;
        balancer_by_lua_block{
            local b = require "ngx.balancer"
            b.set_more_tries(1)  -- '}'
        }
    }
""")})
    out = cli(str(tmp_path / "nginx.conf"))
    assert out.exit_code == 1, out.output


# -- rule outcomes ------------------------------------------------------------------------------

def lua_up(body: str) -> str:
    return ("    upstream lb {\n        server 127.0.0.1:9;\n        balancer_by_lua_block {\n"
            + body + "        }\n    }\n")


OUTCOMES = {
    "unconditional": (lua_up("            ngx.balancer.set_more_tries(1)\n"),
                      ONE_ROUTE + "  #! http_retry_loop error\n"),
    "conditional": (lua_up("            if not ngx.ctx.tried then\n"
                           "                ngx.ctx.tried = true\n"
                           "                ngx.balancer.set_more_tries(1)\n"
                           "            end\n"),
                    ONE_ROUTE + "  #! http_retry_loop warning\n"),
    "conditional, a large literal": (lua_up("            if not ngx.ctx.tried then\n"
                                            "                ngx.ctx.tried = true\n"
                                            "                ngx.balancer.set_more_tries(20000)\n"
                                            "            end\n"),
                                     ONE_ROUTE + "  #! http_retry_loop error\n"),
    "set_current_peer in a loop": (lua_up("            for i = 1, 3 do\n"
                                          "                ngx.balancer.set_current_peer(h, i)\n"
                                          "            end\n"),
                                   ONE_ROUTE + "  #! http_retry_loop note\n"),
    "no set_more_tries at all": (lua_up("            ngx.balancer.set_current_peer(h, 80)\n"),
                                 ONE_ROUTE + "\n"),
    "bounded but large, no timeout": (
        lua_up("            ngx.balancer.set_more_tries(1)\n"),
        "    proxy_next_upstream_tries 50;  #! unbounded_next_upstream warning\n"
        + ONE_ROUTE + "\n"),
    "bounded but large, with a timeout": (
        lua_up("            ngx.balancer.set_more_tries(1)\n"),
        "    proxy_next_upstream_tries 50;\n    proxy_next_upstream_timeout 10s;\n"
        + ONE_ROUTE + "\n"),
    "bounded at the threshold (--max-tries, 10)": (
        lua_up("            ngx.balancer.set_more_tries(1)\n"),
        "    proxy_next_upstream_tries 10;  #! unbounded_next_upstream warning\n"
        + ONE_ROUTE + "\n"),
    "bounded below the threshold": (lua_up("            ngx.balancer.set_more_tries(1)\n"),
                                    "    proxy_next_upstream_tries 9;\n" + ONE_ROUTE + "\n"),
}


@pytest.mark.parametrize(("upstream", "body"), list(OUTCOMES.values()), ids=list(OUTCOMES))
def test_lua_outcomes(tmp_path: Path, upstream: str, body: str) -> None:
    check(tmp_path, {"nginx.conf": http(body, upstream)})


def test_max_tries_moves_the_conditional_threshold(tmp_path: Path) -> None:
    up = lua_up("            if x then ngx.balancer.set_more_tries(5) end\n")
    write(tmp_path, {"nginx.conf": http(ONE_ROUTE + "\n", up)})
    path = str(tmp_path / "nginx.conf")
    assert [f.severity for f in lint([path]).findings] == [Severity.WARNING]
    assert [f.severity for f in lint([path], max_tries=5).findings] == [Severity.ERROR]
    assert cli("--max-tries", "5", path).exit_code == 1
    assert cli("--max-tries", "6", path).exit_code == 0


def servers(n: int, name: str) -> str:
    return (f"    upstream {name} {{\n"
            + "".join(f"        server 10.0.0.{i}:80;\n" for i in range(1, n + 1)) + "    }\n")


def test_unbounded_next_upstream(tmp_path: Path) -> None:
    ups = (servers(10, "ten") + servers(9, "nine") + servers(3, "three")
           + "    upstream names {\n"
           + "".join(f"        server app{i}.example:80;\n" for i in range(12)) + "    }\n")
    result = check(tmp_path, {"nginx.conf": http("""\
    server {
        listen 80;
        location /ten { proxy_pass http://ten; }  #! unbounded_next_upstream warning
        location /nine { proxy_pass http://nine; }
        location /three { proxy_pass http://three; }
        location /names { proxy_pass http://names; }  #! unbounded_next_upstream warning
        location /tries { proxy_next_upstream_tries 3; proxy_pass http://ten; }
        location /timeout { proxy_next_upstream_timeout 30s; proxy_pass http://ten; }
        location /many-tries {
            proxy_next_upstream_tries 20;  #! unbounded_next_upstream warning
            proxy_pass http://ten;
        }
        location /off { proxy_next_upstream off; proxy_pass http://ten; }
    }
""", ups)})
    ten = next(f for f in result.findings if "location /ten" in f.message)
    assert ten.facts["peers"] == 10
    names = next(f for f in result.findings if "names" in f.message)
    assert names.facts["exact"] is False
    assert "at least 12 servers" in names.message


def test_no_live(tmp_path: Path) -> None:
    check(tmp_path, {"nginx.conf": http("""\
    server {
        listen 80;
        location /a {
            proxy_next_upstream error no_live;
            proxy_pass http://three;  #! no_live_retry_loop error
        }
        location /b {
            proxy_next_upstream error no_live;
            proxy_next_upstream_tries 100000;  #! no_live_retry_loop warning
            proxy_pass http://three;
        }
        location /c {
            proxy_next_upstream error no_live;
            proxy_next_upstream_tries 9;
            proxy_pass http://three;
        }
        location /c10 {
            proxy_next_upstream error no_live;
            proxy_next_upstream_tries 10;  #! no_live_retry_loop warning
            proxy_pass http://three;
        }
        location /d {
            proxy_next_upstream error timeout;
            proxy_pass http://three;
        }
    }
""", servers(3, "three"))})


def test_findings_of_many_locations_merge_into_one(tmp_path: Path) -> None:
    locations = "".join(f"        location /l{i} {{ proxy_pass http://lb; }}\n" for i in range(7))
    result = check(tmp_path, {"nginx.conf": http(
        "    proxy_next_upstream_tries 0;  #! http_retry_loop error\n"
        "    server {\n        listen 80;\n" + locations + "    }\n")})
    (finding,) = result.findings
    assert finding.facts["places"] == 7
    assert "It applies to 7 places: location /l0, location /l1, " in finding.message


def test_merged_places_add_up(tmp_path: Path) -> None:
    body = ("    proxy_next_upstream_tries 0;\n"
            "    server { listen 80; location / { proxy_pass http://lb; }\n"
            "        location /b { proxy_pass http://lb; } location /c { proxy_pass http://lb; }"
            " }\n"
            "    server { listen 81; location / { proxy_pass http://lb; }\n"
            "        location /d { proxy_pass http://lb; } location /e { proxy_pass http://lb; }"
            "\n        location /f { proxy_pass http://lb; } }\n")
    write(tmp_path, {"nginx.conf": http(body)})
    (finding,) = lint([str(tmp_path / "nginx.conf")]).findings
    assert finding.facts["places"] == 7
    listed = re.search(r"applies to 7 places: (.*?)(?: and (\d+) more)?\.$", finding.message)
    assert listed is not None
    shown = listed.group(1).split(", ")
    assert len(shown) + int(listed.group(2) or 0) == 7, finding.message


# -- broken inputs ------------------------------------------------------------------------------

BROKEN: dict[str, tuple[str, bytes | None, int | None]] = {
    # name: (file name, content or None for no file, line of the error)
    "missing file": ("missing.conf", None, None),
    "unbalanced: no closing brace": ("nginx.conf", b"events {}\nhttp {\n    server {\n"
                                     b"        listen 80;\n    }\n", 5),
    "unbalanced: one brace too many": ("nginx.conf", b"events {}\nhttp {\n    server {\n"
                                       b"        listen 80;\n    }\n}\n}\n", 7),
    "directive in the wrong place": ("nginx.conf", b"events {}\nhttp {\n"
                                     b"    proxy_pass http://x;\n}\n", 3),
    "binary garbage": ("garbage.conf", b"\x1f\x8b\x08\x00\xff\xfe}\x00\x01\x02", None),
    "invalid YAML": ("values.yaml", b"controller:\n  config:\n    a: [1, 2\n    b: c\n", 4),
    "YAML with a tab": ("cm.yaml", b"apiVersion: v1\nkind: ConfigMap\ndata:\n\tkey: 1\n", 4),
}


@pytest.mark.parametrize(("name", "content", "line"), list(BROKEN.values()), ids=list(BROKEN))
def test_broken_input_is_one_lint_input_error(tmp_path: Path, name: str, content: bytes | None,
                                              line: int | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = lint([str(path)])
    assert [(f.code, f.severity, f.location.file, f.location.line)
            for f in result.findings] == [("lint_input", Severity.ERROR, str(path), line)]
    assert result.findings[0].message
    out = cli(str(path))
    assert out.exit_code == 2
    no_traceback(out)
    where = f"{path}:{line}" if line else str(path)
    assert out.stderr.startswith(f"retrywatch lint: {where}: "), out.stderr
    # --fail-on never does not hide a file that could not be read
    assert cli("--fail-on", "never", str(path)).exit_code == 2


def _lint_unprivileged(root: Path, *args: str) -> tuple[int, list[Row]]:
    """``retrywatch lint --format json`` in a child that file modes bind: as root, without
    the capabilities that read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), dropped
    by util-linux's setpriv; otherwise as we are."""
    command = [sys.executable, "-m", "retrywatch", "lint", "--format", "json", *args]
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        command = [shutil.which("setpriv") or "setpriv", f"--bounding-set={caps}",
                   f"--inh-caps={caps}", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(done.stdout)
    return done.returncode, sorted(
        (f["code"], f["severity"], os.path.relpath(f["file"], root), f["line"])
        for f in report["findings"])


def test_unreadable_files(tmp_path: Path) -> None:
    write(tmp_path, {"main.conf": http(ONE_ROUTE + "\n"),
                     "inc.conf": http("    include part.conf;  #! lint_input error\n"),
                     "part.conf": "server { listen 81; }\n",
                     "lua.conf": http(ROUTE % "note", FILE_UP % "b.lua"),
                     "b.lua": "require('ngx.balancer').set_more_tries(1)\n"})
    want = marked(tmp_path, ["inc.conf", "lua.conf"])
    for name in ("main.conf", "part.conf", "b.lua"):
        (tmp_path / name).chmod(0)
    assert _lint_unprivileged(tmp_path, str(tmp_path / "main.conf")) == (
        2, [("lint_input", "error", "main.conf", None)])
    code, found = _lint_unprivileged(tmp_path, "--prefix", str(tmp_path),
                                     str(tmp_path / "inc.conf"), str(tmp_path / "lua.conf"))
    assert found == want
    assert code == 2


def test_folder_without_configurations_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no configuration here\n")
    result = lint([str(tmp_path / "empty")])
    assert [(f.code, f.severity, f.location.file) for f in result.findings] == [
        ("lint_input", Severity.ERROR, str(tmp_path / "empty"))]
    assert cli(str(tmp_path / "empty")).exit_code == 2


def test_binary_file_without_braces_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\xff\xfe;\n")
    result = lint([str(path)])
    assert [(f.code, f.severity) for f in result.findings] == [("lint_input", Severity.ERROR)]


def test_subprocess_broken_inputs_exit_2_without_traceback(tmp_path: Path) -> None:
    """The real command, once, over several broken inputs: one error line each on stderr."""
    import subprocess

    paths: list[str] = []
    for name, content, _line in BROKEN.values():
        path = tmp_path / f"{len(paths)}-{name}"
        if content is not None:
            path.write_bytes(content)
        paths.append(str(path))
    done = subprocess.run([sys.executable, "-m", "retrywatch", "lint", *paths],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == len(paths), done.stderr


# -- the command line ---------------------------------------------------------------------------

def line_of(path: str | Path, needle: str) -> int:
    """The line of the first occurrence of needle in the file."""
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture
def confs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean, an error, a warning-only and a note-only configuration (in the cwd)."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {
        "clean.conf": http("    proxy_next_upstream_tries 3;\n" + ONE_ROUTE + "\n"),
        "error.conf": http(ONE_ROUTE + "\n"),
        "warning.conf": http(ONE_ROUTE + "\n", lua_up("if x then ngx.balancer.set_more_tries(1) "
                                                      "end\n")),
        "note.conf": http(ONE_ROUTE + "\n", FILE_UP % "nowhere/b.lua"),
    })
    return {k: f"{k}.conf" for k in ("clean", "error", "warning", "note")}


@pytest.mark.parametrize(("which", "fail_on", "code"), [
    ("clean", "error", 0), ("error", "error", 1), ("warning", "error", 0),
    ("warning", "warning", 1), ("note", "warning", 0), ("note", "note", 1),
    ("error", "never", 0), ("clean", "note", 0),
])
def test_exit_codes(confs: dict[str, str], which: str, fail_on: str, code: int) -> None:
    result = cli("--fail-on", fail_on, confs[which])
    assert result.exit_code == code, result.output
    no_traceback(result)
    assert result.stderr == ""


def test_default_fail_on_is_error(confs: dict[str, str]) -> None:
    assert cli(confs["error"]).exit_code == 1
    assert cli(confs["warning"]).exit_code == 0


def test_output_file(confs: dict[str, str], tmp_path: Path) -> None:
    result = cli("--format", "json", "-o", "report.json", confs["error"])
    assert result.exit_code == 1
    assert result.stdout == ""
    doc = json.loads((tmp_path / "report.json").read_text())
    line = line_of("error.conf", "proxy_pass")
    assert [(f["code"], f["file"], f["line"]) for f in doc["findings"]] == [
        ("http_retry_loop", "error.conf", line)]
    text = cli("--output", "report.txt", confs["error"])
    assert text.stdout == ""
    assert (tmp_path / "report.txt").read_text().startswith(
        f"error.conf:{line}: error[http_retry_loop] ")


def test_text_report(confs: dict[str, str]) -> None:
    out = cli(confs["error"]).stdout.splitlines()
    assert out[0].startswith(f"error.conf:{line_of('error.conf', 'proxy_pass')}: "
                             "error[http_retry_loop] location / passes to upstream lb")
    assert out[1].startswith("  why: ")
    assert out[2] == "  fix: " + fix("http_retry_loop", ingress=False)
    assert f"  see: error.conf:{line_of('error.conf', 'set_more_tries')} set_more_tries(1)" \
        in out
    assert "  docs: docs/lint/http_retry_loop.md (retrywatch lint --explain http_retry_loop)" \
        in out
    assert out[-1] == "1 error(s), 0 warning(s), 0 note(s) in 1 file(s)."


FINDING_KEYS = {"code", "severity", "title", "file", "line", "what", "message", "why", "fix",
                "docs", "related", "facts"}


def test_json_report(confs: dict[str, str]) -> None:
    result = cli("--format", "json", *confs.values())
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"tool", "version", "files", "findings", "summary"}
    assert doc["tool"] == "retrywatch lint"
    assert doc["files"] == ["clean.conf", "error.conf", "warning.conf", "note.conf"]
    assert doc["summary"] == {"error": 1, "warning": 1, "note": 1, "files": 4}
    assert [(f["code"], f["severity"], f["file"], f["line"]) for f in doc["findings"]] == [
        ("http_retry_loop", "error", "error.conf", line_of("error.conf", "proxy_pass")),
        ("http_retry_loop", "note", "note.conf", line_of("note.conf", "proxy_pass")),
        ("http_retry_loop", "warning", "warning.conf", line_of("warning.conf", "proxy_pass"))]
    for f in doc["findings"]:
        assert set(f) == FINDING_KEYS
        assert f["docs"] == "docs/lint/http_retry_loop.md"
        assert f["title"] == RULES["http_retry_loop"].title
        for r in f["related"]:
            assert set(r) == {"file", "line", "what"}
    error = doc["findings"][0]
    assert error["what"] == "proxy_pass http://lb"
    assert error["related"][:2] == [
        {"file": "error.conf", "line": line_of("error.conf", "set_more_tries"),
         "what": "set_more_tries(1)"},
        {"file": "error.conf", "line": line_of("error.conf", "balancer_by_lua_block"),
         "what": "balancer_by_lua_block (upstream lb)"}]
    assert error["facts"]["tries"] == 0


def test_usage_errors(confs: dict[str, str]) -> None:
    assert cli().exit_code == 2
    assert cli("--fail-on", "sometimes", confs["clean"]).exit_code == 2
    assert cli("--max-tries", "1", confs["clean"]).exit_code == 2
    assert cli("--ingress-nginx-version", "latest", confs["clean"]).exit_code == 2


def test_explain_prints_the_page() -> None:
    page = DOCS / "http_retry_loop.md"
    assert page.is_file(), "docs/lint/http_retry_loop.md is missing"
    result = CliRunner().invoke(main, ["lint", "--explain", "http_retry_loop"])
    assert result.exit_code == 0
    assert result.stdout == page.read_text(encoding="utf-8")


def test_explain_unknown_code() -> None:
    result = CliRunner().invoke(main, ["lint", "--explain", "no_such_rule"])
    assert result.exit_code == 1
    assert "no page for 'no_such_rule'" in result.stderr
    no_traceback(result)


# -- SARIF ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sarif_schema() -> dict[str, object]:
    schema: dict[str, object] = json.loads(
        (FIXTURES / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    return schema


def test_sarif_is_valid_and_complete(confs: dict[str, str], tmp_path: Path,
                                     sarif_schema: dict[str, object]) -> None:
    (tmp_path / "bad.conf").write_text("events {}\nhttp {\n")
    result = cli("--format", "sarif", *confs.values(), "bad.conf")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    jsonschema.Draft4Validator(
        sarif_schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER).validate(doc)
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert [r["id"] for r in driver["rules"]] == list(RULES)
    for rule in driver["rules"]:
        assert rule["help"]["markdown"].strip()
        assert rule["help"]["text"]
        page = DOCS / f"{rule['id']}.md"
        if page.is_file():
            assert rule["help"]["markdown"] == page.read_text(encoding="utf-8")
    results = run["results"]
    got = sorted((r["ruleId"], r["level"],
                  r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
                  r["locations"][0]["physicalLocation"].get("region", {}).get("startLine"))
                 for r in results)
    assert got == [
        ("http_retry_loop", "error", "error.conf", line_of("error.conf", "proxy_pass")),
        ("http_retry_loop", "note", "note.conf", line_of("note.conf", "proxy_pass")),
        ("http_retry_loop", "warning", "warning.conf", line_of("warning.conf", "proxy_pass")),
        ("lint_input", "error", "bad.conf", 2)]
    for r in results:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["message"]["text"]
        if r["ruleId"] != "lint_input":
            related = r["relatedLocations"]
            assert related
            for rel in related:
                assert rel["physicalLocation"]["region"]["startLine"] >= 1
                assert rel["message"]["text"]
    error = next(r for r in results if r["level"] == "error" and r["ruleId"] != "lint_input")
    assert [(x["physicalLocation"]["artifactLocation"]["uri"],
             x["physicalLocation"]["region"]["startLine"])
            for x in error["relatedLocations"]][:2] == [
        ("error.conf", line_of("error.conf", "set_more_tries")),
        ("error.conf", line_of("error.conf", "balancer_by_lua_block"))]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    assert len(invocation["toolExecutionNotifications"]) == 1


def test_sarif_of_a_clean_run(confs: dict[str, str], sarif_schema: dict[str, object]) -> None:
    result = cli("--format", "sarif", confs["clean"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    jsonschema.Draft4Validator(sarif_schema).validate(doc)
    assert doc["runs"][0]["results"] == []
    assert doc["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_sarif_uris_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {"my conf/nginx#1.conf": http(ONE_ROUTE + "\n")})
    doc = json.loads(cli("--format", "sarif", "my conf/nginx#1.conf").stdout)
    (result,) = doc["runs"][0]["results"]
    location = result["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location["uri"] == "my%20conf/nginx%231.conf"


# -- the same words as the live diagnosis ---------------------------------------------------------

def plain_sentence(text: str) -> str:
    """A fix without its closing "Then restore the upstream."."""
    assert text.endswith(" Then restore the upstream."), text
    return text.removesuffix(" Then restore the upstream.")


def lint_finding(tmp_path: Path, conf: str, code: str) -> Finding:
    write(tmp_path, {"nginx.conf": conf})
    found = [f for f in lint([str(tmp_path / "nginx.conf")]).findings if f.code == code]
    assert len(found) == 1
    return found[0]


def test_http_fix_is_the_live_diagnosis_fix(tmp_path: Path) -> None:
    from retrywatch.forensics.replay import replay

    live = {a.diagnosis.code: a.diagnosis.fix
            for a in replay([str(SAMPLE_STORM)], tz=ZoneInfo("UTC")).alerts if a.diagnosis}
    assert "http_retry_loop" in live
    finding = lint_finding(tmp_path, http(ONE_ROUTE + "\n"), "http_retry_loop")
    assert finding.fix == fix("http_retry_loop", "proxy", ingress=False)
    assert plain_sentence(finding.fix) in live["http_retry_loop"]
    assert live["http_retry_loop"].endswith(" Then restore the upstream.")


def test_stream_fix_is_the_live_diagnosis_fix(tmp_path: Path) -> None:
    lines = [stream_refused(t, 3584946, upstream=f"10.12.39.{132 + i % 2}:5555")
             for t in range(4) for i in range(3000)]
    alerts = alerts_of(Detector(None).process(aggregated(lines)))
    (alert,) = alerts.values()
    assert alert.diagnosis is not None
    assert alert.diagnosis.code == "stream_retry_loop"
    finding = lint_finding(tmp_path, stream("    server { listen 9000; proxy_pass lb; }\n"),
                           "stream_retry_loop")
    assert finding.fix == fix("stream_retry_loop", "proxy", ingress=False)
    assert plain_sentence(finding.fix) in alert.diagnosis.fix


def test_grpc_fix_names_the_grpc_directives(tmp_path: Path) -> None:
    finding = lint_finding(tmp_path, http(
        "    server { listen 80; location / { grpc_pass grpc://lb; } }\n"), "http_retry_loop")
    assert finding.fix == fix("http_retry_loop", "grpc", ingress=False)
    assert "grpc_next_upstream_tries 3;" in finding.fix
    assert "proxy_next_upstream" not in finding.fix


def diagnosis_codes() -> list[str]:
    """Every code the live diagnosis can give, read from its source."""
    source = Path(diagnosis_module.__file__).read_text(encoding="utf-8")
    codes = re.findall(r"Diagnosis\(\s*\"(\w+)\"", source)
    assert {"http_retry_loop", "stream_retry_loop", "synchronous_loop"} <= set(codes)
    return sorted(set(codes))


@pytest.mark.parametrize("code", sorted(set(diagnosis_codes()) | set(RULES)))
def test_every_code_has_its_docs_page(code: str) -> None:
    assert doc_page(code) == f"docs/lint/{code}.md"
    assert (ROOT / doc_page(code)).is_file(), f"{doc_page(code)} is missing"
    if code in RULES:
        assert isinstance(RULES[code], Rule)
        assert RULES[code].docs == doc_page(code)
