#!/usr/bin/env bash
# One command from a fresh machine with Docker to a running app: builds the base image and the
# `paas` binary, starts `paas up` in the background, deploys examples/hello and prints its URL.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/base-images.sh
cargo build --release -q -p paas-cli
PAAS=target/release/paas
DATA="${PAAS_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/paas}"
mkdir -p "$DATA"

if ! curl -fsS -o /dev/null http://127.0.0.1:7070/login 2>/dev/null; then
  echo "demo: starting paas up (log: $DATA/up.log)"
  nohup "$PAAS" up --build-network host >"$DATA/up.log" 2>&1 &
  for _ in $(seq 1 50); do
    curl -fsS -o /dev/null http://127.0.0.1:7070/login 2>/dev/null && break
    sleep 0.2
  done
fi

"$PAAS" apps list -o json | grep -q '"name": "hello"' || "$PAAS" apps create hello
"$PAAS" deploy examples/hello --app hello
echo
echo "demo: curl http://hello.localhost:8080/ says:"
curl -sS http://hello.localhost:8080/
echo "demo: stop the platform with: kill $(pgrep -f "$PAAS up" | head -n1) (the app keeps running)"
