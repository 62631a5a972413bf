#!/usr/bin/env bash
# make setup: Debian packages (when missing), then .venv with both projects in editable mode.
# Idempotent and fast when nothing changed: pip runs only when a pinned input changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the project needs: speech synthesis for tests and demos, audio
# conversion, etcd for the local control plane, and a real Prometheus for the e2e checks;
# openssl makes the local control plane's certificates.
DEB=(espeak-ng sox libsox-fmt-all libsndfile1 etcd-server prometheus openssl)
missing=()
for pkg in "${DEB[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

command -v go >/dev/null || { echo "setup: the Go toolchain is missing (needed to build the local control plane)" >&2; exit 1; }

VENV=${VENV:-.venv}
stamp="$VENV/.speechtune-setup"
want=$(cat trainers/pyproject.toml operator/pyproject.toml hack/requirements-dev.txt | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e "./trainers[all]" -e ./operator -r hack/requirements-dev.txt
echo "$want" > "$stamp"
echo "setup: $VENV ready"
