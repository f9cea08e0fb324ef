"""The fixes retrywatch gives, in one place: the live alerts' diagnosis and ``retrywatch
lint`` say the same words for the same failure mode, and both point at the same page.

A failure mode is named by its code (``http_retry_loop``, ``stream_retry_loop``, …); the
page ``docs/lint/<code>.md`` explains it with a minimal bad and fixed configuration.
"""

from __future__ import annotations

__all__ = ["DOCS", "MODULES", "doc_page", "fix", "module_of_scheme"]

#: The folder of the pages, relative to the project's root (and in the wheel:
#: ``retrywatch/lint/docs``).
DOCS = "docs/lint"

#: The upstream modules whose ``*_next_upstream_tries`` bound the retries of a request.
MODULES = ("proxy", "grpc", "fastcgi", "uwsgi", "scgi", "memcached")

#: The upstream module of each ``upstream:`` URL scheme nginx prints.
_SCHEMES = {"grpc": "grpc", "grpcs": "grpc", "fastcgi": "fastcgi", "uwsgi": "uwsgi",
            "suwsgi": "uwsgi", "scgi": "scgi", "memcached": "memcached"}


def module_of_scheme(scheme: str) -> str:
    """``grpcs`` → ``grpc``; ``http``, ``https`` and anything else → ``proxy``."""
    return _SCHEMES.get(scheme, "proxy")


def doc_page(code: str) -> str:
    return f"{DOCS}/{code}.md"


def fix(code: str, module: str = "proxy", *, ingress: bool | None = None) -> str:
    """The fix for failure mode ``code``, with the directives of ``module`` (proxy, grpc, …).

    ``ingress``: True to name only the ingress-nginx setting, False for plain nginx only,
    None (a live alert, where the log does not say which) for both.
    """
    tries = f"{module}_next_upstream_tries"
    timeout = f"{module}_next_upstream_timeout"
    connect_timeout = f"{module}_connect_timeout"
    http_ingress = module == "proxy"
    if code == "http_retry_loop":
        plain = (f"Set {tries} 3; (and {timeout}) in the location; in Lua call "
                 "set_more_tries() only while a budget remains.")
        ingress_text = ('ingress-nginx: proxy-next-upstream-tries: "3" in the controller '
                        "ConfigMap, or the nginx.ingress.kubernetes.io/proxy-next-upstream-tries "
                        'annotation ("0" means unlimited).')
        if ingress is True:
            return ingress_text + " Then restore the upstream."
        if ingress is None and http_ingress:
            return f"{plain} {ingress_text} Then restore the upstream."
        return plain + " Then restore the upstream."
    if code == "stream_retry_loop":
        plain = ("In the stream server set proxy_next_upstream_tries 3; (and "
                 "proxy_next_upstream_timeout).")
        ingress_text = ('ingress-nginx >= 0.42.0: set proxy-stream-next-upstream-tries: "3" '
                        "in the controller ConfigMap (the default; \"0\" is unlimited); older "
                        "versions render no limit in the stream servers: upgrade.")
        if ingress is True:
            return ingress_text + " Then restore the upstream."
        if ingress is None:
            return f"{plain} {ingress_text} Then restore the upstream."
        return plain + " Then restore the upstream."
    if code == "synchronous_loop":
        return (f"Bound the retries now: {tries} 3; (and with a Lua balancer call "
                "set_more_tries() only while a try budget remains). Then repair the address "
                "itself: a stale unix socket, an unroutable or unassignable address.")
    if code == "slow_timeout_loop":
        return (f"Set {tries} 3; and {timeout} (e.g. 30s) so a request gives up; lower "
                f"{connect_timeout}"
                + (" (ingress-nginx: proxy-connect-timeout)"
                   if http_ingress and ingress is not False
                   else "")
                + " and remove the dead peers (readiness probes, max_fails).")
    if code == "unbounded_next_upstream":
        return (f"Bound the request in count and time: {tries} 3; and {timeout} 30s; "
                f"keep {connect_timeout} short so each try gives up quickly.")
    if code == "no_live_retry_loop":
        return (f"Keep {tries} small (3) wherever no_live is in {module}_next_upstream, "
                f"and set {timeout}: with no live peer every retry fails at once.")
    if code == "multiplexed_failing_requests":
        return ("Restore the upstream (check its pods or processes and its port), and make "
                f"sure each request is bounded: {tries} 3; and {timeout} (with a Lua balancer, "
                "set_more_tries() only while a budget remains).")
    if code == "keepalive_failing_requests":
        return ("Restore the upstream (check its pods or processes and its port); make nginx "
                "stop sending to dead peers sooner (max_fails/fail_timeout, readiness probes).")
    return f"Cap the retries ({tries} 3; {timeout}) and restore the upstream."
