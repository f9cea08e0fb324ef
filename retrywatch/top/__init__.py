"""`retrywatch top`: a live terminal view of a running retrywatch."""
