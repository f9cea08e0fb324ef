"""Runaway or just busy (detect/judge.py) and the configuration's verdicts for a connection
(detect/knowledge.py): each rule of the judgement against the traffic that shares its key.

The figures below are those of the real runs described in the issue and in
shared/real-nginx/notes.md: a Lua loop runs at 20k-45k failures a second on one connection;
an HTTP/2 connection of 200 concurrent requests to 3 dead servers writes 600 lines in under
a second; a keep-alive poller writes a few a second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_recorded_nginx_logs import SAMPLE_LOGS

from retrywatch.detect.core import Conn
from retrywatch.detect.judge import judge
from retrywatch.detect.knowledge import Knowledge, KnowledgeError
from retrywatch.forensics.replay import replay
from retrywatch.lint.rules import Verdict

NOW = datetime(2026, 11, 25, 17, 33, 44, tzinfo=UTC)
STORM = SAMPLE_LOGS / "scenario-http-lua-storm.error.log.gz"
STORM_CONF = SAMPLE_LOGS / "configs" / "scenario-http-lua-storm.conf"


def conn(failures: int, peak: int, *, upstreams: dict[str, int] | None = None,
         kinds: dict[str, int] | None = None, requests: dict[str, int] | None = None,
         subsystem: str = "http", server: str | None = "storm.test", seconds: int = 1,
         host: str | None = None) -> Conn:
    upstreams = upstreams or {"127.0.0.1:9001": failures}
    requests = requests if requests is not None else (
        {"GET /storm1?cid=x HTTP/1.1": failures} if subsystem == "http" else {})
    return Conn(("nginx", 1, 7), failures, failures, seconds, 0, seconds - 1, NOW, NOW, peak,
                0, max(upstreams.values()), upstreams, {"111: Connection refused": failures},
                kinds or {"connect_failed": failures}, requests, len(requests), "127.0.0.1",
                server, host, "http://127.0.0.1:9001/storm1", subsystem, "")


# -- the log alone --------------------------------------------------------------------------

def test_a_lua_loop_is_confirmed() -> None:
    j = judge(conn(75_460, 38_000, seconds=2, requests={"POST /pkg.S/M HTTP/2.0": 75_460}))
    assert j.confidence == "confirmed"
    assert "more than its requests can make" in j.evidence[0]
    assert "at most 1,000 requests on a connection" in j.evidence[0]


def test_a_synchronous_loop_is_confirmed_in_its_one_second() -> None:
    j = judge(conn(8000, 8000, kinds={"connect_to_failed": 8000}))
    assert j.confidence == "confirmed"
    assert "synchronous loop" in j.evidence[0]


def test_concurrent_http2_requests_are_only_suspected() -> None:
    """200 concurrent requests, 3 dead servers, tries 3: 600 failures in one second."""
    peers = {f"127.0.0.1:900{i}": 200 for i in range(1, 4)}
    j = judge(conn(600, 600, upstreams=peers, requests={"GET /api HTTP/2.0": 600}))
    assert j.confidence == "suspected"
    assert any("HTTP/2" in e for e in j.evidence)


def test_the_limit_is_requests_times_peers() -> None:
    """Each request fails at most once per peer, and a connection carries at most 1,000
    requests (keepalive_requests): 3,000 failures over 3 peers can be 1,000 bounded
    requests; 3,001 cannot."""
    peers = {f"127.0.0.1:900{i}": 1000 for i in range(1, 4)}
    h2 = {"GET /api HTTP/2.0": 3000}
    assert judge(conn(3000, 3000, upstreams=peers, requests=h2)).confidence == "suspected"
    peers["127.0.0.1:9001"] += 1
    assert judge(conn(3001, 3001, upstreams=peers, requests=h2)).confidence == "confirmed"
    # a "no live upstreams" line ends a request: one more line per request
    many = judge(conn(3500, 3500, upstreams={"127.0.0.1:9001": 3500},
                      kinds={"connect_failed": 1000, "no_live_upstreams": 2500}, requests=h2))
    assert many.confidence == "confirmed"
    assert judge(conn(2000, 2000, upstreams={"127.0.0.1:9001": 2000},
                      kinds={"connect_failed": 5, "no_live_upstreams": 1995}),
                 ).confidence == "suspected"


def test_the_configuration_says_how_many_requests_a_connection_carries() -> None:
    """keepalive_requests 10000: 6,000 failures over 3 peers are 2,000 bounded requests."""
    peers = {f"127.0.0.1:900{i}": 2000 for i in range(1, 4)}
    busy = conn(6000, 6000, upstreams=peers, requests={"GET /api HTTP/2.0": 6000})
    assert judge(busy).confidence == "confirmed"  # nginx's default would not allow it
    bounded = Verdict(False, 3, "location /api/: proxy_next_upstream_tries 3", requests=10_000)
    assert judge(busy, bounded).confidence == "ruled_out"


def test_keepalive_poller_is_only_suspected() -> None:
    """A client polling /healthz 5 times a second, 12 dead servers: 60 failures a second."""
    peers = {f"127.0.0.1:{9001 + i}": 300 for i in range(12)}
    j = judge(conn(3600, 60, upstreams=peers, seconds=60,
                   requests={"GET /healthz HTTP/1.1": 3600}))
    assert j.confidence == "suspected"


def test_no_live_upstreams_means_requests_that_ended() -> None:
    j = judge(conn(40, 12, kinds={"connect_failed": 3, "no_live_upstreams": 37}))
    assert j.confidence == "suspected"
    assert any("no live upstreams" in e for e in j.evidence)


def test_a_stream_session_trying_one_peer_again_and_again_is_a_loop() -> None:
    """A session tries each peer at most once: 12 tries of one peer is a balancer adding
    tries, even at a slow pace."""
    j = judge(conn(24, 3, subsystem="stream", server="127.0.0.1:17010", seconds=10,
                   upstreams={"10.12.39.132:5555": 12, "10.12.39.133:5555": 12}))
    assert j.confidence == "confirmed"
    ok = judge(conn(12, 12, subsystem="stream", server="127.0.0.1:17010",
                    upstreams={f"10.0.0.{i}:5555": 2 for i in range(6)}))
    assert ok.confidence == "suspected"


# -- with the configuration's verdict ----------------------------------------------------------

LOOP = Verdict(True, None, "location /storm1 passes to a Lua balancer adding tries")
BOUNDED = Verdict(False, 3, "location / : proxy_next_upstream_tries 3")


def test_a_route_that_can_loop_confirms_even_a_slow_loop() -> None:
    j = judge(conn(12, 1, seconds=12), LOOP)
    assert j.confidence == "confirmed"
    assert j.to_dict()["configuration"] == {"loop": True, "bound": None, "why": LOOP.why}


def test_a_bounded_route_rules_the_alert_out() -> None:
    j = judge(conn(600, 600, requests={"GET /api HTTP/2.0": 600}), BOUNDED)
    assert j.confidence == "ruled_out"


def test_a_log_that_contradicts_the_configuration_is_still_said() -> None:
    j = judge(conn(75_000, 38_000, seconds=2), BOUNDED)
    assert j.confidence == "suspected"
    assert "is it the configuration nginx runs?" in j.evidence[-1]


def test_an_uncertain_loop_needs_the_log_too() -> None:
    maybe = Verdict(True, None, "a balancer whose code could not be read", certain=False)
    assert judge(conn(12, 1, seconds=12), maybe).confidence == "suspected"
    assert judge(conn(75_000, 38_000, seconds=2), maybe).confidence == "confirmed"


# -- the configuration matched to connections ---------------------------------------------------

def knowledge(tmp_path: Path, text: str, name: str = "nginx.conf") -> Knowledge:
    path = tmp_path / name
    path.write_text(text)
    return Knowledge.load([str(path)])


LUA = """
    upstream lua {
        server 127.0.0.1:9000;
        balancer_by_lua_block {
            local b = require "ngx.balancer"
            b.set_more_tries(1)
            assert(b.set_current_peer("127.0.0.1", 9001))
        }
    }
    upstream plain { server 127.0.0.1:9002; server 127.0.0.1:9003; }
"""


@pytest.mark.parametrize(("request_line", "loop", "bound"), [
    ("GET /a/b HTTP/1.1", True, None),  # longest prefix /a
    ("GET /a/bounded/x HTTP/1.1", False, 3),  # a nested location
    ("GET /exact HTTP/1.1", False, 2),  # = /exact beats the regex
    ("GET /exactly.php HTTP/1.1", True, None),  # the regex beats the prefix /
    ("GET /static/x.php HTTP/1.1", False, 2),  # ^~ stops the regex search
    ("GET /other HTTP/1.1", False, 2),
])
def test_location_choice_follows_nginx(tmp_path: Path, request_line: str, loop: bool,
                                       bound: int | None) -> None:
    known = knowledge(tmp_path, """events {}
http {""" + LUA + """
    server {
        listen 127.0.0.1:8080;
        server_name storm.test www.storm.test;
        location / { proxy_pass http://plain; }
        location /a { proxy_pass http://lua;
            location /a/bounded { proxy_pass http://lua; proxy_next_upstream_tries 3; } }
        location = /exact { proxy_pass http://plain; }
        location ^~ /static/ { proxy_pass http://plain; }
        location ~ \\.php$ { proxy_pass http://lua; }
    }
    server { listen 127.0.0.1:8081; server_name other.test; location / { return 204; } }
}
""")
    verdict = known.verdict(conn(20, 20, requests={request_line: 20}))
    assert verdict is not None
    assert (verdict.loop, verdict.bound) == (loop, bound)


def test_server_is_chosen_by_its_first_name(tmp_path: Path) -> None:
    known = knowledge(tmp_path, """events {}
http {""" + LUA + """
    server { listen 127.0.0.1:8080; server_name a.test; location / { proxy_pass http://lua; } }
    server { listen 127.0.0.1:8080; server_name b.test; location / { proxy_pass http://plain; } }
}
""")
    a = known.verdict(conn(20, 20, server="a.test"))
    b = known.verdict(conn(20, 20, server="b.test"))
    assert a is not None and a.loop
    assert b is not None and not b.loop
    assert known.verdict(conn(20, 20, server="c.test")) is None  # not known: the log decides


def test_stream_server_is_chosen_by_its_listen(tmp_path: Path) -> None:
    known = knowledge(tmp_path, """events {}
stream {
    upstream dead3 { server 127.0.0.1:9001; server 127.0.0.1:9002; server 127.0.0.1:9003; }
    server { listen 127.0.0.1:17020; proxy_pass dead3; }
    server { listen 17021; proxy_pass dead3; proxy_next_upstream_tries 2; }
}
""")
    one = known.verdict(conn(30, 30, subsystem="stream", server="127.0.0.1:17020"))
    two = known.verdict(conn(30, 30, subsystem="stream", server="127.0.0.1:17021"))
    assert one is not None and (one.loop, one.bound) == (False, 3)
    assert two is not None and (two.loop, two.bound) == (False, 2)


def test_ingress_nginx_yaml_gives_verdicts(tmp_path: Path) -> None:
    known = knowledge(tmp_path, """apiVersion: v1
kind: ConfigMap
metadata: {name: ingress-nginx-controller}
data:
  proxy-next-upstream-tries: "0"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  annotations:
    nginx.ingress.kubernetes.io/proxy-next-upstream-tries: "3"
spec:
  rules:
    - host: api.example.com
""", "ingress.yaml")
    default = known.verdict(conn(20, 20, server="shop.example.com", host="shop.example.com"))
    api = known.verdict(conn(20, 20, server="api.example.com", host="api.example.com"))
    assert default is not None and default.loop
    assert api is not None and (api.loop, api.bound) == (False, 3)


def test_unreadable_configuration_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text("http { server { ")
    with pytest.raises(KnowledgeError, match=r"nginx\.conf"):
        Knowledge.load([str(path)])


# -- end to end on the real storms ------------------------------------------------------------

def test_the_sample_storms_are_confirmed_with_and_without_their_configuration() -> None:
    utc = ZoneInfo("UTC")
    plain = replay([str(STORM)], tz=utc)
    known = replay([str(STORM)], tz=utc, knowledge=Knowledge.load([str(STORM_CONF)]))
    for result in (plain, known):
        assert len(result.alerts) == 5
        assert {a.confidence for a in result.alerts} == {"confirmed"}
    assert all(a.to_dict()["configuration"]["loop"] for a in known.alerts)


def test_a_configuration_that_bounds_the_storms_is_contradicted_not_obeyed(
        tmp_path: Path) -> None:
    """Given a configuration where every route is bounded, the real storms still alert
    (suspected, saying the log contradicts it): a stale configuration never hides a loop."""
    text = STORM_CONF.read_text().replace("proxy_next_upstream_tries 0;",
                                          "proxy_next_upstream_tries 3;")
    result = replay([str(STORM)], tz=ZoneInfo("UTC"),
                    knowledge=knowledge(tmp_path, text))
    assert len(result.alerts) == 5
    assert {a.confidence for a in result.alerts} == {"suspected"}
    assert all("is it the configuration nginx runs?" in a.to_dict()["evidence"][-1]
               for a in result.alerts)
