"""Generated code only: the Python modules and gRPC stubs of protos/, written here by
protos/generate.py (`make install`, `make protos`, the package build) and never edited by hand.

`toolwire.grpc_gen.decode.v1` holds the messages and stubs of the proto package
`toolwire.decode.v1` (the names on the wire); the decode service itself is
`toolwire.services.decode`.
"""
