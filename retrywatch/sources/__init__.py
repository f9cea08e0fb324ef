"""Sources: where bytes come from. One module per input kind."""
