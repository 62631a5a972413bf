"""I/O: the Kubernetes API (through the official client) and plain HTTP scrapes."""
