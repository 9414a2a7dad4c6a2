"""The local platform: what runs Ferry on one machine (the Kafka and PostgreSQL stack, the supervisor,
``ferry up|down|status``, the generated API tokens and the demo). No service imports it."""
