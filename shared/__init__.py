"""Ferry's common package, in two rooms.

The library, which every service imports: event contracts (``events``), the Kafka edge (``envelope``,
``kafka``, the one consumer loop and its parts), settings, telemetry, datasets and splits, the artifact
store, fault points, the process runtime, the registry client and the ONNX module.

``shared.local``: the local platform that runs Ferry on one machine (the Kafka and PostgreSQL stack, the
supervisor, ``ferry up|down|status``, generated tokens, the demo). No service imports it.
"""
