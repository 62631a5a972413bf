"""SpeechTune's kopf operator: reconciles FinetuneJobs into Kubeflow PyTorchJobs.

Layers (checked by import-linter): `handlers` (kopf registrations and the steps they run)
-> `builders` (pure: spec in, API objects and status out) -> `client` (Kubernetes and HTTP
I/O). `settings` and `telemetry` are plain values every layer may use. Nothing here
imports the trainers or torch.
"""
