"""The Open Inference Protocol v2 over gRPC: ``grpc_predict_v2.proto`` and the modules generated from it.

The ``*_pb2*`` modules are generated, never edited: after changing the .proto, regenerate them with
``python -m services.gateway.proto.generate`` (grpcio-tools, a dev dependency) and commit the result; a
unit test fails when they are stale. See :mod:`services.gateway.proto.generate` for the one change made
to protoc's output (a descriptor pool of their own).
"""
