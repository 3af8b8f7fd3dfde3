"""Webhook events: the outbox written with job changes, signatures, and the sender.

Receivers verify deliveries with ``castframe.webhooks.verify(payload, headers, secret)``.
"""

from castframe.webhooks.signing import WebhookVerificationError, verify

__all__ = ["WebhookVerificationError", "verify"]
