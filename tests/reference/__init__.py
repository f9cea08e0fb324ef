"""The reference model: retrywatch's per-line path as it was written in Python before the
compiled core (``core/``) took it over. Slow and simple; the core is checked against it
line for line (tests/test_differential.py). Keep it the plain statement of the rules.
"""
