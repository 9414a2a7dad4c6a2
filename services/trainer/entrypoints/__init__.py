"""Entrypoints of the trainer: the Kafka consumer."""
