#!/usr/bin/env bash
# What image labels cost a code-only rebuild on Docker's legacy builder (20.10): the same
# examples/notes context built with no labels, with the platform's five labels through the build
# API (`docker build --label`, one LABEL step each) and with one LABEL line appended to the
# Dockerfile (what the node agent does now, node-agent/src/docker/context.rs). Prints the mean of
# N rounds (default 5) of each, alternating, after a warm-up build.
set -euo pipefail
rounds="${1:-5}"
export DOCKER_BUILDKIT=0
dir="$(mktemp -d)"
trap 'rm -rf "$dir"; docker rmi -f paas-bench-labels:plain paas-bench-labels:api paas-bench-labels:line >/dev/null 2>&1 || true' EXIT
cp -r "$(dirname "$0")/../examples/notes/." "$dir/"
cd "$dir"
labels=(paas.managed=true paas.node=bench paas.app=notes paas.env=production paas.release=1)
api=()
for l in "${labels[@]}"; do api+=(--label "$l"); done
cp Dockerfile Dockerfile.line
echo "LABEL ${labels[*]}" >>Dockerfile.line
docker build -q -t paas-bench-labels:plain . >/dev/null 2>&1
declare -A total=([plain]=0 [api]=0 [line]=0)
for i in $(seq "$rounds"); do
  for kind in plain api line; do
    echo "# change $kind $i" >>app.py
    args=(-q -t "paas-bench-labels:$kind")
    [[ $kind == api ]] && args+=("${api[@]}")
    [[ $kind == line ]] && args+=(-f Dockerfile.line)
    start=$(date +%s.%N)
    docker build "${args[@]}" . >/dev/null 2>&1
    total[$kind]=$(echo "${total[$kind]} + $(date +%s.%N) - $start" | bc)
  done
done
for kind in plain api line; do
  printf '%-6s %6.2f s per code-only rebuild\n' "$kind" "$(echo "${total[$kind]} / $rounds" | bc -l)"
done
printf 'api/plain %.2fx, line/plain %.2fx\n' "$(echo "${total[api]} / ${total[plain]}" | bc -l)" \
  "$(echo "${total[line]} / ${total[plain]}" | bc -l)"
