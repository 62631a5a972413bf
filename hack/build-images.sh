#!/usr/bin/env bash
# make images: build the four SpeechTune images (operator, nemo, speechbrain, hf) from the
# repository root, the build context every Dockerfile under images/ expects.
#   REGISTRY=ghcr.io/speechtune TAG=0.1.0 PUSH=1 hack/build-images.sh [operator nemo ...]
# Needs a running Docker engine with BuildKit (each Dockerfile has its own .dockerignore).
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-ghcr.io/speechtune}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/speechtune/Chart.yaml)}
DOCKER=${DOCKER:-docker}
images=("$@")
((${#images[@]})) || images=(operator nemo speechbrain hf)

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "build-images: '$DOCKER' not found: building images needs a Docker engine (none on the dev machines)." >&2
  echo "build-images: the Dockerfiles' policy is checked without one: pytest tests/chart/test_images.py" >&2
  exit 2
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "build-images: '$DOCKER' is installed but no Docker engine answers ('$DOCKER info' failed)." >&2
  exit 2
fi

for name in "${images[@]}"; do
  dockerfile=images/$name/Dockerfile
  [[ -f $dockerfile ]] || { echo "build-images: no $dockerfile (known: operator nemo speechbrain hf)" >&2; exit 2; }
  ref=$REGISTRY/speechtune-$name:$TAG
  echo "build-images: $ref"
  DOCKER_BUILDKIT=1 "$DOCKER" build -f "$dockerfile" -t "$ref" .
  if [[ ${PUSH:-0} == 1 ]]; then
    "$DOCKER" push "$ref"
  fi
done
