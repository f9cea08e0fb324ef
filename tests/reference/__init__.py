"""The reference model: retrywatch's per-line path as it was written in Python before the
compiled core (``core/``) took it over. Slow and simple; the core is checked against it
line for line (tests/test_differential.py). Keep it the plain statement of the rules.

Where the core is deliberately stricter (the differential tests stay clear of these):
lines split by docker or CRI are held for at most 16 streams at once (a piece of a
further stream is counted as ``too_many_streams``); an event is counted as the lines
read that made it, so a docker ``log`` holding escaped newlines is one line, not one per
newline; a pid, tid or cid over 2**64 is a ``bad_prefix``.
"""
