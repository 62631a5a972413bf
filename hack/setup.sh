#!/usr/bin/env bash
# make setup: Debian packages (when missing), then .venv with both projects in editable mode.
# Installs exactly uv.lock with uv (never resolves); a no-change run takes about a second.
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

# uv, pinned by hash, in a cache folder keyed by its version (outside the repository).
UV_VERSION=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' hack/requirements-uv.txt)
UV_HOME=${XDG_CACHE_HOME:-$HOME/.cache}/speechtune/uv-$UV_VERSION
UV=$UV_HOME/bin/uv
if [[ ! -x $UV ]]; then
  echo "setup: installing uv $UV_VERSION into $UV_HOME"
  python3 -m venv "$UV_HOME.tmp.$$"
  "$UV_HOME.tmp.$$/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r hack/requirements-uv.txt
  rm -rf "$UV_HOME" && mv "$UV_HOME.tmp.$$" "$UV_HOME"
  # pip wrote absolute shebangs of the temporary folder; uv itself is a static binary.
fi
export UV_PYTHON_DOWNLOADS=never  # use this machine's Python 3.11, never fetch one

VENV=${VENV:-.venv}
# --locked: install exactly uv.lock and fail if pyproject.toml and the lock disagree.
if ! "$UV" lock --check --python python3.11 >/dev/null 2>&1; then
  echo "setup: uv.lock is stale against the pyproject.toml files: run 'make lock' and commit uv.lock" >&2
  "$UV" lock --check --python python3.11 2>&1 | tail -3 >&2
  exit 1
fi
UV_PROJECT_ENVIRONMENT=$VENV "$UV" sync --frozen --all-extras --python python3.11 --quiet
echo "setup: $VENV ready (uv.lock, $(grep -c '^name = ' uv.lock) packages)"
