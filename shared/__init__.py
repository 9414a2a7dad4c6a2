"""Ferry's common package: event contracts, the Kafka edge, settings, telemetry and the local stack."""
