#!/usr/bin/env bash
# The many-hosts benchmark (issue 15): HOSTS `models-fetch sync` processes with separate stores
# (one "host" each), started at once, fetch one model of FLEET_SIZE, side by side:
#
#   direct      every host straight against the origin (tests/e2e/origin.sh: the Hub on
#               127.0.0.1 answering 302 to its CDN on 127.0.0.2), as a site without a cache;
#   site cache  every host through the site cache, the nginx text nix/lib.nix renders
#               (siteCacheConfig, as services.models.siteCache deploys it), started empty
#               for each run, in front of the same origin.
#
# Reported per case (medians over RUNS): wall time from the first start to the last exit,
# origin bytes (the CDN's $body_bytes_sent) / model size, Hub requests, and whether every host
# published the verified file. Loopback only, on one machine: the hosts, the cache and the
# origin share its cores and disk, so the wall times show the cost of the cache's extra hop
# and writes, not a site's network; "origin bytes / model size" is what a site saves.
#
# Usage: benches/fleet.sh                 prints markdown on stdout, progress on stderr
# Env:   HOSTS (20), FLEET_SIZE (256M; NM in MiB), RUNS (3), SLICE (8m),
#        MODELS_FETCH_BIN (default: cargo build --release), NGINX_BIN, BENCH_DIR, KEEP=1.
# Needs: nginx (with the slice module), nix-instantiate, openssl.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
hosts="${HOSTS:-20}"
runs="${RUNS:-3}"
slice="${SLICE:-8m}"
spec="${FLEET_SIZE:-256M}"
[[ "$spec" =~ ^([1-9][0-9]*)[Mm]$ ]] || {
  echo "FLEET_SIZE: $spec is not NM (MiB)" >&2
  exit 2
}
size=$((BASH_REMATCH[1] << 20))
export NGINX_BIN="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
for tool in "$NGINX_BIN" nix-instantiate openssl; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing (apt-get install nginx nix-bin openssl)" >&2
    exit 2
  }
done
if [ -z "${MODELS_FETCH_BIN:-}" ]; then
  echo "building models-fetch (release)..." >&2
  (cd "$repo" && cargo build --release --locked --quiet)
  MODELS_FETCH_BIN="$repo/target/release/models-fetch"
fi

work="${BENCH_DIR:-$(mktemp -d /var/tmp/models-fetch-fleet.XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
need_kib=$(((hosts + 3) * size / 1024 + 65536))
free_kib="$(df -Pk "$work" | awk 'NR == 2 { print $4 }')"
if [ "$free_kib" -lt "$need_kib" ]; then
  echo "not enough space in $work: need about $((need_kib >> 20)) GiB" >&2
  exit 2
fi
cp "$MODELS_FETCH_BIN" "$work/models-fetch"
mf="$work/models-fetch"
origin="$work/origin"
cache="$work/site-cache"
cleanup() {
  [ ! -f "$cache/nginx.pid" ] || "$NGINX_BIN" -p "$cache" -c "$cache/nginx.conf" -s quit 2>/dev/null || true
  [ ! -f "$origin/nginx.pid" ] || bash "$repo/tests/e2e/origin.sh" stop "$origin" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
pick_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 10000))
    port_free "$1" "$port" && echo "$port" && return
  done
  echo "no free port on $1" >&2
  exit 2
}
wait_listen() {
  for _ in $(seq 200); do
    port_free "$1" "$2" || return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2" >&2
  exit 2
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- the origin and the model --------------------------------------------------------------
hub_port="$(pick_port 127.0.0.1)"
cdn_port="$(pick_port 127.0.0.2)"
bash "$repo/tests/e2e/origin.sh" init "$origin" "$hub_port" "$cdn_port" >/dev/null
echo "writing a random $((size >> 20)) MiB model..." >&2
head -c "$size" /dev/urandom >"$work/model.bin"
read -r sha _size _commit < <(bash "$repo/tests/e2e/origin.sh" add "$origin" fleet-org/model \
  model.safetensors "$work/model.bin")
bash "$repo/tests/e2e/origin.sh" start "$origin"
wait_listen 127.0.0.2 "$cdn_port"
printf '{"models": [{"id": "fleet-model", "version": "1.0.0", "chakra": "ajna", "frequencyHz": 432,
  "geometry": {"pattern": "hexagon", "dimensions": 2}, "temporalScope": "eternal",
  "semanticTags": ["bench"], "dataset": {"id": "bench", "url": "https://example.org/bench"},
  "training": {"repo": "https://example.org/bench", "command": "none"},
  "artifact": {"filename": "model.safetensors", "sha256": "%s", "sizeBytes": %s,
    "format": "safetensors", "repo": "fleet-org/model", "path": "model.safetensors"},
  "license": "MIT", "provenance": {"runId": "bench"}}]}\n' "$sha" "$size" >"$work/index.json"

# --- the site cache, as nix/lib.nix renders it ----------------------------------------------
cache_port="$(pick_port 127.0.0.1)"
mkdir -p "$cache/logs" "$cache/tmp"
nix-instantiate --readonly-mode --eval --strict --json -E "
  let mf = import $repo/nix/lib.nix; in mf.siteCacheConfig (mf.siteCacheDefaults // {
    listen = [ \"127.0.0.1:$cache_port\" ]; upstream = \"http://127.0.0.1:$hub_port\";
    cacheDir = \"$cache/cache\"; sliceSize = \"$slice\"; })" |
  python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin))' >"$cache/site-cache.conf"
user_line=""
[ "$(id -u)" != 0 ] || user_line="user root;"
cat >"$cache/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $cache/nginx.pid;
error_log $cache/logs/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $cache/tmp/body;
    proxy_temp_path $cache/tmp/proxy;
    fastcgi_temp_path $cache/tmp/fastcgi;
    uwsgi_temp_path $cache/tmp/uwsgi;
    scgi_temp_path $cache/tmp/scgi;
    access_log off;
    include $cache/site-cache.conf;
}
EOF

# One config per host: ENDPOINT
configs() {
  for h in $(seq "$hosts"); do
    mkdir -p "$work/host-$h"
    cat >"$work/host-$h/config.toml" <<EOF
index = "$work/index.json"
cache_dir = "$work/host-$h/out/hf-cache"
store_dir = "$work/host-$h/out/store"
endpoint = "$1"
deployed_models = ["fleet-model"]
stall_timeout = "60s"
EOF
  done
}

# run CASE: every host at once; prints "WALL_MS CDN_BYTES HUB_REQUESTS PUBLISHED"
run_hosts() {
  local start end pids=() failed=0 published=0 cdn0 hub0 h
  for h in $(seq "$hosts"); do rm -rf "$work/host-$h/out"; done
  sync
  cdn0="$(wc -l <"$origin/logs/cdn.log")"
  hub0="$(wc -l <"$origin/logs/hub.log")"
  start=$(date +%s%N)
  for h in $(seq "$hosts"); do
    "$mf" sync --config "$work/host-$h/config.toml" >"$work/host-$h/log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
  end=$(date +%s%N)
  for h in $(seq "$hosts"); do
    f="$work/host-$h/out/store/fleet-model/model.safetensors"
    [ "$(openssl dgst -sha256 -r "$f" 2>/dev/null | cut -c1-64)" = "$sha" ] && published=$((published + 1))
  done
  [ "$failed" = 0 ] || echo "$failed hosts failed; e.g. $(tail -n 3 "$work/host-1/log")" >&2
  sleep 0.3 # nginx logs a request once it is done
  echo "$(((end - start) / 1000000)) $(tail -n +"$((cdn0 + 1))" "$origin/logs/cdn.log" | awk -F'\t' '{ s += $3 } END { printf "%d", s }') $(($(wc -l <"$origin/logs/hub.log") - hub0)) $published"
}

declare -A WALL BYTES HUB OK
for run in $(seq "$runs"); do
  for case in direct cache; do
    if [ "$case" = direct ]; then
      configs "http://127.0.0.1:$hub_port"
    else
      [ ! -f "$cache/nginx.pid" ] || { "$NGINX_BIN" -p "$cache" -c "$cache/nginx.conf" -s quit; sleep 0.5; }
      rm -rf "$cache/cache"
      "$NGINX_BIN" -p "$cache" -c "$cache/nginx.conf"
      wait_listen 127.0.0.1 "$cache_port"
      configs "http://127.0.0.1:$cache_port"
    fi
    echo "run $run: $case..." >&2
    read -r wall bytes hub ok < <(run_hosts)
    echo "  ${wall} ms, origin bytes ${bytes}, hub requests ${hub}, published ${ok}/${hosts}" >&2
    WALL[$case]+="$wall "
    BYTES[$case]+="$bytes "
    HUB[$case]+="$hub "
    OK[$case]+="$ok "
  done
done

# --- report --------------------------------------------------------------------------------
echo "## Many hosts: $hosts hosts, one $((size >> 20)) MiB model (median of $runs runs, slices of $slice)"
echo
echo "| case | wall s | origin bytes / model size | Hub requests | hosts that published the verified file |"
echo "|---|---:|---:|---:|---:|"
for case in direct cache; do
  label="straight against the origin"
  [ "$case" = direct ] || label="through the site cache (nix/lib.nix siteCacheConfig)"
  wall="$(median <<<"${WALL[$case]}")"
  ratio="$(awk -v b="$(median <<<"${BYTES[$case]}")" -v s="$size" 'BEGIN { printf "%.2f", b / s }')"
  printf '| %s | %.2f | %s | %s | %s / %s |\n' "$label" "$(awk -v w="$wall" 'BEGIN { print w / 1000 }')" \
    "$ratio" "$(median <<<"${HUB[$case]}")" "$(median <<<"${OK[$case]}")" "$hosts"
done
echo
echo "Runs (wall ms): direct ${WALL[direct]}/ cache ${WALL[cache]}; origin bytes: direct ${BYTES[direct]}/ cache ${BYTES[cache]}"
