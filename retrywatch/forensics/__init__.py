"""Forensics over whole logs: replay, analyze (pandas), reports and export."""
