"""retrywatch: finds nginx connections stuck in connect() retry loops."""

from retrywatch.alerts import Alert, AlertChange
from retrywatch.detector import Detector, DetectorConfig
from retrywatch.events import Event, Unparsed
from retrywatch.parser import Parser
from retrywatch.pipeline import SourcePipeline, parse_text

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertChange",
    "Detector",
    "DetectorConfig",
    "Event",
    "Parser",
    "SourcePipeline",
    "Unparsed",
    "__version__",
    "parse_text",
]
