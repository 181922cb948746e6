#!/usr/bin/env bash
# bench-ingress.sh -- the project's ingress next to nginx and HAProxy (Debian) as reverse
# proxies to ONE backend: an nginx container deployed through `paas deploy --image`.
# Run from the project checkout after `cargo build --release --bin paas`.
# This is the edge issue's method (../shared/bench/ingress-side-by-side.sh) with its criterion's
# access logging: every proxy logs each request, paas its router line into the central log,
# nginx its default `combined` access_log to a file, HAProxy `option httplog` to a file (its
# stdout). ACCESS_LOG=off turns the peers' logs off (paas always writes its router line).
#
#   CPU 0: wrk (load) and the backend container;  CPU 1: the proxy under test (paas up / nginx / haproxy)
#   Per target: 2 s warm-up, DURATION s measured; ROUNDS rounds round-robin.
#   Figure: proxy CPU µs per request = CPU time of the proxy's own process tree / requests
#   (from /proc/PID/stat), so the load generator's saturation does not blur the comparison.
#   Idle memory: RSS growth of the proxy while IDLE_CONNS keep-alive connections are held.
# Everything listens on 127.0.0.1; every process started here is stopped at exit.
set -u
ACCESS_LOG=${ACCESS_LOG:-on}; ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}; CONNS=${CONNS:-64}; IDLE_CONNS=${IDLE_CONNS:-2000}
PROJECT=$(pwd); PAAS=${PAAS:-$PROJECT/target/release/paas}
[ -x "$PAAS" ] || { echo "build first: cargo build --release --bin paas"; exit 1; }
command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v wrk >/dev/null || \
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy wrk >/dev/null; }
for c in nginx haproxy wrk taskset python3 curl docker; do command -v $c >/dev/null || { echo "missing $c"; exit 1; }; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
T=$(mktemp -d /tmp/ingress-bench.XXXXXX); chmod 755 "$T"
NODE=bench-$(basename "$T" | tr -dc 'a-z0-9' | tail -c 6)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  docker ps -aq --filter "label=paas.node=$NODE" | xargs -r docker rm -f >/dev/null 2>&1
  # A network can stay busy for a moment after its last container went.
  for _ in 1 2 3 4 5; do
    nets=$(docker network ls -q --filter "label=paas.node=$NODE"); [ -z "$nets" ] && break
    docker network rm $nets >/dev/null 2>&1 || sleep 1
  done
  docker volume ls -q --filter "label=paas.node=$NODE" | xargs -r docker volume rm >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
tree_pids() { local p=$1; echo $p; for c in $(ps -o pid= --ppid $p 2>/dev/null); do tree_pids $c; done; }
cpu_ticks() { local s=0 p v; for p in $(tree_pids $1); do v=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null); s=$((s+${v:-0})); done; echo $s; }
rss_kb() { local s=0 p v; for p in $(tree_pids $1); do v=$(awk '/^VmRSS:/{print $2}' /proc/$p/status 2>/dev/null); s=$((s+${v:-0})); done; echo $s; }
CLK=$(getconf CLK_TCK)

# backend image: nginx answering "hello world\n" on $PORT
if ! docker image inspect paas-bench-backend:1 >/dev/null 2>&1; then
  mkdir -p "$T/img"
  cat >"$T/img/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light >/dev/null && rm -rf /var/lib/apt/lists/*
RUN printf 'worker_processes 1;\ndaemon off;\nerror_log /dev/stderr warn;\nevents { worker_connections 10000; }\nhttp { access_log off; keepalive_requests 1000000; server { listen 8080 reuseport; location / { return 200 "hello world\\n"; } } }\n' > /etc/nginx/bench.conf
CMD ["nginx", "-c", "/etc/nginx/bench.conf"]
EOF
  docker build --network host -q -t paas-bench-backend:1 "$T/img" >/dev/null || { echo "backend image build failed"; exit 1; }
fi

export HOME=$T/home; mkdir -p $HOME
API=$(free_port); HTTP=$(free_port)
taskset -c 1 "$PAAS" up --data-dir "$T/data" --api-addr 127.0.0.1:$API --http-addr 127.0.0.1:$HTTP --node-name $NODE >"$T/up.log" 2>&1 &
UP=$!; PIDS+=($UP)
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$API/ && break; sleep 0.2; done
"$PAAS" apps create bench >/dev/null || { tail "$T/up.log"; exit 1; }
# The agent registers just after the API answers: the first deploy may find no node yet.
for _ in $(seq 50); do "$PAAS" deploy --app bench --image paas-bench-backend:1 >"$T/deploy.log" 2>&1 && break; sleep 0.2; done
grep -q "no node is available" "$T/deploy.log" && { cat "$T/deploy.log"; exit 1; }
CID=$(docker ps -q --filter "label=paas.node=$NODE" --filter label=paas.app=bench | head -1)
docker update --cpuset-cpus 0 "$CID" >/dev/null
BACK=$(docker port "$CID" 8080/tcp | head -1)
echo "# backend container $CID at $BACK; paas up pid $UP on CPU 1"

NG=$(free_port); HA=$(free_port)
mkdir -p "$T/ng"
if [ "$ACCESS_LOG" = on ]; then NG_LOG="access_log $T/ng/access.log;"; HA_LOG="log stdout format raw local0"; HA_OPT="option httplog"
else NG_LOG="access_log off;"; HA_LOG=""; HA_OPT=""; fi
cat >"$T/ng.conf" <<EOF
worker_processes 1; daemon off; pid $T/ng/pid; error_log $T/ng/err warn;
events { worker_connections 10000; }
http { $NG_LOG client_body_temp_path $T/ng/b; proxy_temp_path $T/ng/p; fastcgi_temp_path $T/ng/f; uwsgi_temp_path $T/ng/u; scgi_temp_path $T/ng/s;
  upstream be { server $BACK; keepalive 64; }
  server { listen 127.0.0.1:$NG; keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; } } }
EOF
taskset -c 1 nginx -c "$T/ng.conf" >/dev/null 2>&1 & PIDS+=($!); NGP=$!
cat >"$T/ha.cfg" <<EOF
global
  maxconn 5000
  $HA_LOG
defaults
  mode http
  log global
  $HA_OPT
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HA
  default_backend b
backend b
  http-reuse always
  server s1 $BACK
EOF
taskset -c 1 haproxy -f "$T/ha.cfg" -db >"$T/ha.log" 2>&1 & PIDS+=($!); HAP=$!
sleep 1
declare -A PORT=([ingress]=$HTTP [nginx]=$NG [haproxy]=$HA [direct]=${BACK##*:}) PID=([ingress]=$UP [nginx]=$NGP [haproxy]=$HAP)
for n in ingress nginx haproxy direct; do
  for _ in $(seq 50); do b=$(curl -s -H 'Host: bench.localhost' http://127.0.0.1:${PORT[$n]}/); [ "$b" = "hello world" ] && break; sleep 0.2; done
  [ "$b" = "hello world" ] || { echo "$n does not answer: '$b'"; tail -n 5 "$T/ha.log" "$T/up.log"; exit 1; }
done

declare -A RPS US P99
for r in $(seq $ROUNDS); do
  for n in direct ingress nginx haproxy; do
    url=http://127.0.0.1:${PORT[$n]}/
    taskset -c 0 wrk -t1 -c$CONNS -d2s -H 'Host: bench.localhost' $url >/dev/null 2>&1
    c0=0; [ -n "${PID[$n]:-}" ] && c0=$(cpu_ticks ${PID[$n]})
    taskset -c 0 wrk -t1 -c$CONNS -d${DURATION}s --latency -H 'Host: bench.localhost' $url >"$T/w" 2>&1
    c1=0; [ -n "${PID[$n]:-}" ] && c1=$(cpu_ticks ${PID[$n]})
    reqs=$(awk '/requests in/{print $1}' "$T/w"); rps=$(awk '/Requests\/sec/{print $2}' "$T/w")
    p99=$(awk '$1=="99%"{print $2}' "$T/w"); errs=$(awk '/Non-2xx|Socket errors/{print}' "$T/w" | tr '\n' ' ')
    us=$(python3 -c "print(round(($c1-$c0)/$CLK*1e6/max(1,$reqs),2))")
    echo "round $r $n rps=$rps p99=$p99 proxy_cpu_us_per_req=$us $errs"
    RPS[$n]+="$rps "; US[$n]+="$us "; P99[$n]+="$p99 "
  done
done
med() { python3 -c "
import statistics,sys
def ms(x):
    for u,f in (('us',1e-3),('ms',1.0),('s',1e3)):
        if x.endswith(u): return float(x[:-len(u)])*f
    return float(x)
print(round(statistics.median([ms(x) for x in sys.argv[1:]]),2))" $*; }

# idle memory per held keep-alive connection
cat >"$T/hold.py" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n"; socks = []; ok = 0
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); buf = b""
    while b"hello world\n" not in buf:
        d = s.recv(65536)
        if not d: break
        buf += d
    ok += b"hello world\n" in buf; socks.append(s)
print(ok, flush=True); sys.stdout.close(); time.sleep(30)
EOF
declare -A KB
for n in ingress nginx haproxy; do
  before=$(rss_kb ${PID[$n]})
  python3 "$T/hold.py" ${PORT[$n]} $IDLE_CONNS >"$T/held.$n" & H=$!
  for _ in $(seq 300); do [ -s "$T/held.$n" ] && break; sleep 0.2; done; sleep 2
  after=$(rss_kb ${PID[$n]}); kill $H 2>/dev/null; wait $H 2>/dev/null
  KB[$n]=$(python3 -c "print(round(($after-$before)/$IDLE_CONNS,2))"); echo "idle $n held=$(cat $T/held.$n) rss_before=${before}KB rss_after=${after}KB per_conn=${KB[$n]}KB"
  sleep 2
done
echo "# access logs: paas router lines on; nginx and HAProxy $ACCESS_LOG ($(wc -l <"$T/ng/access.log" 2>/dev/null || echo 0) nginx lines, $(wc -l <"$T/ha.log") HAProxy lines)"
echo "## medians over $ROUNDS rounds (wrk -t1 -c$CONNS, ${DURATION}s)"
printf "%-8s %10s %10s %14s %12s\n" target req/s p99 cpu_us/req idle_KB/conn
for n in direct ingress nginx haproxy; do
  printf "%-8s %10s %10s %14s %12s\n" $n "$(med ${RPS[$n]})" "$(med ${P99[$n]})ms" "$(med ${US[$n]})" "${KB[$n]:--}"
done
i=$(med ${US[ingress]}); g=$(med ${US[nginx]})
echo "RATIO ingress/nginx cpu_us_per_req = $(python3 -c "print(round($i/$g,2))")"
