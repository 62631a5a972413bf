"""The local Kubernetes control plane for development and tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake GPU nodes) and the
Kubeflow training-operator, built from the Go module proxy and run as loopback-only local
processes. `hack/cluster/controlplane.py` is the command line; `tests/conftest.py` uses
`cluster.ensure_up` / `cluster.release` for the pytest session fixture.
"""
