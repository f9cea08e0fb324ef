"""retrywatch: finds nginx connections stuck in connect() retry loops."""

from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import Core, DetectorConfig, EventReader
from retrywatch.detect.engine import Engine
from retrywatch.detect.events import Event, Unparsed
from retrywatch.detect.records import RecordReader, parse_text

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
