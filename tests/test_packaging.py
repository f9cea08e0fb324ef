"""``pip install retrywatch`` is the live service; ``retrywatch[analyze]`` adds forensics.

pandas, pyarrow, matplotlib and jinja2 (about 430 of 500 MB installed) serve
``retrywatch analyze`` only: every other command runs without them, and ``analyze``
without them says in one line what to install. Each check runs in a fresh interpreter,
so that nothing this test process imported counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parent.parent
STORM = ROOT / "sample_logs" / "scenario-http-lua-storm.error.log.gz"
CONF = ROOT / "tests" / "fixtures" / "lint" / "ingress-nginx-v1.11.8.rendered.nginx.conf"
FORENSICS = ("pandas", "pyarrow", "matplotlib", "jinja2")
MESSAGE = "retrywatch analyze needs the forensics extra: pip install 'retrywatch[analyze]'"

#: Makes the forensics stack unimportable, as in an install without the extra.
BLOCK = f"import sys\nfor name in {FORENSICS!r}:\n    sys.modules[name] = None\n"

#: The live commands run for real in one interpreter, and every module of the live path
#: imported; then none of the forensics stack may have been imported.
LIVE = """
import importlib, pkgutil, sys, tempfile
from pathlib import Path
from click.testing import CliRunner
import retrywatch
from retrywatch.cli import main

def ok(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code in (0, 1), (args, result.exit_code, result.output)

storm, conf = sys.argv[1], sys.argv[2]
ok("--help")
ok("parse", "--timezone", "UTC", storm)
ok("replay", "--format", "json", "--timezone", "UTC", storm)
ok("lint", conf)
ok("lint", "--explain", "http_retry_loop")
ok("config", "--log", "/var/log/nginx/error.log")
for package in ("serve", "detect", "sources", "delivery", "lint"):
    module = importlib.import_module(f"retrywatch.{package}")
    for info in pkgutil.walk_packages(module.__path__, f"retrywatch.{package}."):
        importlib.import_module(info.name)
for name in ("replay", "report", "discover"):
    importlib.import_module(f"retrywatch.forensics.{name}")

# `retrywatch run`, short of listening: logging set up, the service started and stopped.
from retrywatch.serve.api import create_app
from retrywatch.serve.logs import configure
from retrywatch.serve.service import Service
from retrywatch.serve.settings import Settings
configure("json", "warning")
with tempfile.TemporaryDirectory() as tmp:
    log = Path(tmp) / "error.log"
    log.write_bytes(b"")
    service = Service(Settings.model_validate({"log": [str(log)], "timezone": "UTC"}))
    create_app(service.engine, service.notifier)
    service.start()
    service.stop()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORENSICS)
assert not loaded, loaded
print("live path clean")
"""


def python(code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def command(*args: str | Path, blocked: bool = True) -> str:
    """A script running ``retrywatch ARGS``, the forensics stack blocked unless not
    ``blocked``."""
    argv = ["retrywatch", *map(str, args)]
    return (f"{BLOCK if blocked else 'import sys'}\nsys.argv = {argv!r}\n"
            "from retrywatch.cli import main\nmain()\n")


def test_the_live_path_imports_no_forensics_package() -> None:
    done = python(f"FORENSICS = {FORENSICS!r}\n{LIVE}", STORM, CONF)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "live path clean" in done.stdout


def test_replay_runs_without_the_forensics_extra() -> None:
    done = python(command("replay", "--format", "jsonl", "--timezone", "UTC", STORM))
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"cid":49447' in done.stdout.replace(" ", "")  # the storm still firing at the end


def test_analyze_without_the_extra_says_what_to_install() -> None:
    done = python(command("analyze", "--timezone", "UTC", STORM))
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(MESSAGE), lines[0]
    assert "pandas" in lines[0]


def test_analyze_with_the_extra_still_runs() -> None:
    done = python(command("analyze", "--format", "json", "--timezone", "UTC", STORM,
                          blocked=False))
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"summary"' in done.stdout


def test_the_forensics_stack_is_an_extra_that_dev_pulls_in() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {Requirement(d).name for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not names & set(FORENSICS), names
    assert {Requirement(d).name for d in extras["analyze"]} == set(FORENSICS)
    dev = [Requirement(d) for d in extras["dev"]]
    assert any(r.name == "retrywatch" and r.extras == {"analyze"} for r in dev), dev
