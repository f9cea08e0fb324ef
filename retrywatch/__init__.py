"""retrywatch: finds nginx connections stuck in connect() retry loops."""

from retrywatch.alerts import Alert, AlertChange
from retrywatch.core import Core, DetectorConfig, EventReader
from retrywatch.engine import Engine
from retrywatch.events import Event, Unparsed
from retrywatch.records import RecordReader, parse_text

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertChange",
    "Core",
    "DetectorConfig",
    "Engine",
    "Event",
    "EventReader",
    "RecordReader",
    "Unparsed",
    "__version__",
    "parse_text",
]
