"""Alert delivery: webhooks (signed JSON), Alertmanager and Slack.

The engine hands every alert change to :meth:`Notifier.offer` under its lock; the
notifier only puts it in each receiver's bounded queue (O(1), a full queue drops and
counts). One worker thread per receiver groups, formats and sends, with bounded retries.
"""

from retrywatch.delivery.channel import ChannelStats, Result
from retrywatch.delivery.notifier import Notifier
from retrywatch.delivery.receivers import Receiver
from retrywatch.delivery.state import DeliveryState
from retrywatch.delivery.verify import InvalidSignature, ReplayGuard, verify

__all__ = [
    "ChannelStats",
    "DeliveryState",
    "InvalidSignature",
    "Notifier",
    "Receiver",
    "ReplayGuard",
    "Result",
    "verify",
]
