"""What every service process needs around its servicer: the gRPC server with health and
reflection, internal TLS and token, Prometheus metrics, and the request id in log lines."""
