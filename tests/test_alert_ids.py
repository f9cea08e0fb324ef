"""Alert ids are stable across processes, machines and versions: pinned to literal values.

An id is what a receiver deduplicates on and what a restart keeps (``alert_id``: sha256 of
source, worker pid, connection id and the first failure's second). A per-process hash (or
any change of the recipe) would pass every test that only compares ids within one run:
these compare them with values written down once, and across processes whose string
hashing differs (``PYTHONHASHSEED``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrywatch.detect.alerts import alert_id

ROOT = Path(__file__).resolve().parent.parent
STORM = "sample_logs/scenario-http-lua-storm.error.log.gz"

#: The five runaway connections of the bundled storm, replayed from the project's root
#: (source name: the path as given, without .gz), as (id, pid, cid).
STORM_IDS = [
    ("6e0c0dedff9acdc6", 18264, 73),
    ("a50c1ca6894a26ff", 18264, 20137),
    ("05059f15c15f0755", 18265, 20302),
    ("1ce9584d17ef7033", 18264, 41557),
    ("f52f8bee4bb8db4e", 18265, 49447),
]


def test_alert_id_is_pinned() -> None:
    assert alert_id("/var/log/nginx/error.log", 4242, 49447, 1733138600) == "9e1edca14a7a748a"
    # every part of the key counts
    assert alert_id("/var/log/nginx/error.log", 4242, 49447, 1733138601) != "9e1edca14a7a748a"
    assert alert_id("/var/log/nginx/error.log", 4243, 49447, 1733138600) != "9e1edca14a7a748a"
    assert alert_id("/var/log/nginx/error.lo", 4242, 49447, 1733138600) != "9e1edca14a7a748a"
    # the separator keeps fields apart: (…, 1, 23) is not (…, 12, 3)
    assert alert_id("s", 1, 23, 0) != alert_id("s", 12, 3, 0)


def replay_ids(seed: str) -> list[tuple[str, int, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env["PYTHONHASHSEED"] = seed
    out = subprocess.run(
        [sys.executable, "-m", "retrywatch", "replay", "--format", "json", "--timezone", "UTC",
         STORM], cwd=ROOT, env=env, capture_output=True, check=True, timeout=120)
    return sorted((a["id"], a["pid"], a["cid"]) for a in json.loads(out.stdout)["alerts"])


@pytest.mark.parametrize("seed", ["0", "1", "4242"])
def test_replayed_ids_are_pinned_in_every_process(seed: str) -> None:
    assert replay_ids(seed) == sorted(STORM_IDS)
