"""Certificates and kubeconfigs for the local control plane, made with the openssl CLI.

One CA signs the apiserver's serving certificate and a client certificate per identity;
RBAC then sees the controller-manager and the scheduler as their bootstrap users and
everything else as `kubernetes-admin` (group system:masters).
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess
from pathlib import Path

# Extra names the apiserver answers to in-cluster; the first service IP of the service range.
APISERVER_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:10.96.0.1",
)


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    name: str  # file stem and kubeconfig user name
    common_name: str  # the Kubernetes user
    organization: str | None  # the Kubernetes group


ADMIN = ClientIdentity("admin", "kubernetes-admin", "system:masters")
CONTROLLER_MANAGER = ClientIdentity(
    "kube-controller-manager", "system:kube-controller-manager", None
)
SCHEDULER = ClientIdentity("kube-scheduler", "system:kube-scheduler", None)
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER)


def openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl is missing (Debian package `openssl`); it makes the cluster's certificates")
    result = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def make_ca(pki: Path) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=speechtune-local-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )


def issue(pki: Path, stem: str, subject: str, extensions: list[str]) -> None:
    """A key and a CA-signed certificate `<stem>.key` / `<stem>.crt`."""
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", subject,
        cwd=pki,
    )
    (pki / f"{stem}.ext").write_text("\n".join(extensions) + "\n")
    openssl(
        "x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "825", "-out", f"{stem}.crt", "-extfile", f"{stem}.ext",
        cwd=pki,
    )


def make_apiserver_cert(pki: Path) -> None:
    issue(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(APISERVER_SANS),
        ],
    )


def make_client_cert(pki: Path, identity: ClientIdentity) -> None:
    subject = f"/CN={identity.common_name}"
    if identity.organization:
        subject = f"/O={identity.organization}" + subject
    issue(
        pki,
        identity.name,
        subject,
        [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ],
    )


def make_service_account_key(pki: Path) -> None:
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
    openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


# The training-operator's cert rotator keeps a certificate it finds valid: a CA named
# training-operator-ca (PKCS#1 RSA key) and a server certificate for its Service's DNS name.
# Ours also carries 127.0.0.1, the address the apiserver calls the webhook at out of cluster.
WEBHOOK_CA_NAME = "training-operator-ca"
WEBHOOK_DNS_NAME = "training-operator.kubeflow.svc"


def make_webhook_certs(pki: Path) -> None:
    openssl("genrsa", "-traditional", "-out", "webhook-ca.key", "2048", cwd=pki)
    openssl(
        "req", "-x509", "-new", "-key", "webhook-ca.key", "-out", "webhook-ca.crt", "-days", "3650",
        "-subj", f"/O=training-operator/CN={WEBHOOK_CA_NAME}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,digitalSignature,keyEncipherment",
        "-addext", f"subjectAltName=DNS:{WEBHOOK_CA_NAME}",
        cwd=pki,
    )
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "webhook.key", "-out", "webhook.csr", "-subj", f"/CN={WEBHOOK_DNS_NAME}",
        cwd=pki,
    )
    (pki / "webhook.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{WEBHOOK_DNS_NAME},IP:127.0.0.1\n"
    )
    openssl(
        "x509", "-req", "-in", "webhook.csr", "-CA", "webhook-ca.crt", "-CAkey", "webhook-ca.key",
        "-CAcreateserial", "-days", "3650", "-out", "webhook.crt", "-extfile", "webhook.ext",
        cwd=pki,
    )


def make_all(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    make_ca(pki)
    make_apiserver_cert(pki)
    for identity in CLIENTS:
        make_client_cert(pki, identity)
    make_service_account_key(pki)
    make_webhook_certs(pki)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(pki: Path, identity: ClientIdentity, server: str) -> str:
    """A self-contained kubeconfig (certificates inlined) for one identity."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: speechtune-local
  cluster:
    server: {server}
    certificate-authority-data: {b64(pki / "ca.crt")}
users:
- name: {identity.name}
  user:
    client-certificate-data: {b64(pki / f"{identity.name}.crt")}
    client-key-data: {b64(pki / f"{identity.name}.key")}
contexts:
- name: speechtune-local
  context:
    cluster: speechtune-local
    user: {identity.name}
current-context: speechtune-local
"""


def write_kubeconfig(path: Path, pki: Path, identity: ClientIdentity, server: str) -> None:
    path.write_text(kubeconfig_text(pki, identity, server))
    path.chmod(0o600)
