"""Pure functions: a FinetuneJob body in, API objects and status fields out. No I/O, no
kopf, no Kubernetes client (import-linter forbids them here), so every builder is tested
without a cluster."""
