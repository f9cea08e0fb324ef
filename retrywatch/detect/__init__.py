"""Detection: the compiled core seen from Python, the alert lifecycle, diagnosis, and the
records and counters it hands back."""
