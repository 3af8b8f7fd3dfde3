"""Webhook events: the outbox written with job changes, signatures, and the sender."""
