"""The live service: ingest loop and checkpoints, REST API, metrics, settings, demo."""
