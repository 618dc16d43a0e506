#!/usr/bin/env bash
# Benchmark: one large file from a local nginx Hub-like origin (tests/e2e/origin.sh), measured side
# by side in one run, interleaved, medians of several runs:
#
#   models-fetch sync            release build, fresh cache each run: HEAD, 302, GET, sha256,
#                                durable atomic publish
#   curl -sL -o f URL && openssl dgst -sha256 f
#                                the best CLI pair that also yields a sha256 (not durable)
#   dd if=src of=dst bs=1M conv=fsync
#                                the disk limit for a durable copy
#
# Wall time is whole-process (ms), peak RSS from GNU time (%M). The source file is warm in the
# page cache; `sync` runs (untimed) before every measured command. Not a test: CI never runs it.
#
# Usage: benches/fetch.sh [SIZE_GIB]        (default 1; 4 for the dirty-page-limit case)
# Env:   RUNS (default 5, or 3 from 4 GiB), BENCH_DIR (default: a new dir under /var/tmp, removed
#        at the end unless KEEP=1), MODELS_FETCH_BIN (default: cargo build --release),
#        NGINX_BIN (default: nginx in PATH). Needs nginx, curl, openssl and GNU time (apt: nginx time).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
size_gib="${1:-1}"
[[ "$size_gib" =~ ^[1-9][0-9]*$ ]] || {
  echo "usage: $0 [SIZE_GIB]" >&2
  exit 2
}
size=$((size_gib << 30))
runs="${RUNS:-$([ "$size_gib" -ge 4 ] && echo 3 || echo 5)}"

for tool in curl openssl dd; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing" >&2
    exit 2
  }
done
[ -x /usr/bin/time ] || {
  echo "GNU time is missing: apt-get install time" >&2
  exit 2
}
export NGINX_BIN="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
[ -x "$NGINX_BIN" ] || {
  echo "nginx is missing: apt-get install nginx (or run .ci/test)" >&2
  exit 2
}

if [ -z "${MODELS_FETCH_BIN:-}" ]; then
  echo "building models-fetch (release)..." >&2
  (cd "$repo" && cargo build --release --locked --quiet)
  MODELS_FETCH_BIN="$repo/target/release/models-fetch"
fi

work="${BENCH_DIR:-$(mktemp -d /var/tmp/models-fetch-bench.XXXXXX)}"
mkdir -p "$work"
free_kib="$(df -Pk "$work" | awk 'NR == 2 { print $4 }')"
if [ "$free_kib" -lt $((size * 5 / 2 / 1024)) ]; then
  echo "not enough space in $work: need about $((size_gib * 5 / 2)) GiB" >&2
  exit 2
fi
origin="$work/origin"
cleanup() {
  [ ! -f "$origin/nginx.pid" ] || bash "$repo/tests/e2e/origin.sh" stop "$origin" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
pick_port() {
  local ip="$1" port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 10000))
    if port_free "$ip" "$port"; then
      echo "$port"
      return
    fi
  done
  echo "no free port on $ip" >&2
  exit 2
}
hub_port="$(pick_port 127.0.0.1)"
cdn_port="$(pick_port 127.0.0.2)"

echo "writing a random ${size_gib} GiB file in $work..." >&2
head -c "$size" /dev/urandom >"$work/src.bin"
bash "$repo/tests/e2e/origin.sh" init "$origin" "$hub_port" "$cdn_port" >/dev/null
read -r sha served_size _commit < <(bash "$repo/tests/e2e/origin.sh" add "$origin" bench-org/big model.safetensors "$work/src.bin")
[ "$served_size" = "$size" ] || exit 1
bash "$repo/tests/e2e/origin.sh" start "$origin"
for _ in $(seq 100); do
  port_free 127.0.0.2 "$cdn_port" || break
  sleep 0.05
done
hub_url="http://127.0.0.1:$hub_port/bench-org/big/resolve/main/model.safetensors"

cat >"$work/index.json" <<EOF
{"models": [{"id": "bench-big", "version": "1.0.0", "chakra": "ajna", "frequencyHz": 432,
  "geometry": {"pattern": "hexagon", "dimensions": 2}, "temporalScope": "eternal",
  "semanticTags": ["bench"], "dataset": {"id": "bench", "url": "https://example.org/bench"},
  "training": {"repo": "https://example.org/bench", "command": "none"},
  "artifact": {"filename": "model.safetensors", "sha256": "$sha", "sizeBytes": $size,
    "format": "safetensors", "repo": "bench-org/big"},
  "license": "MIT", "provenance": {"runId": "bench"}}]}
EOF
cat >"$work/config.toml" <<EOF
index = "index.json"
cache_dir = "out/hf-cache"
store_dir = "out/store"
endpoint = "http://127.0.0.1:$hub_port"
deployed_models = ["bench-big"]
EOF

names=("models-fetch sync" "curl -o f && openssl dgst -sha256 f" "dd bs=1M conv=fsync")
# Runs case $1 under GNU time (peak RSS into time.txt); no wrapper shell around one program.
run_case() {
  local t=(/usr/bin/time -f %M -o "$work/time.txt")
  # shellcheck disable=SC2016 # $1 and $2 of bash -c are the inner shell's arguments
  case "$1" in
  0) "${t[@]}" "$MODELS_FETCH_BIN" sync --config "$work/config.toml" >"$work/sync.log" 2>&1 ;;
  1) "${t[@]}" bash -c 'curl -sfL -o "$1" "$2" && openssl dgst -sha256 "$1" >"$1.sha256"' _ "$work/out/f" "$hub_url" ;;
  2) "${t[@]}" dd if="$work/src.bin" of="$work/out/f" bs=1M conv=fsync status=none ;;
  esac
}
check_case() {
  case "$1" in
  0) cmp -s "$work/out/store/bench-big/model.safetensors" "$work/src.bin" ;;
  1) grep -q "$sha" "$work/out/f.sha256" ;;
  2) [ "$(stat -c %s "$work/out/f")" = "$size" ] ;;
  esac
}

declare -a walls rss
cat "$work/src.bin" >/dev/null # warm
echo "origin: nginx on 127.0.0.1:$hub_port (hub) and 127.0.0.2:$cdn_port (cdn); 1 warm-up + $runs runs, interleaved" >&2
for run in $(seq 0 "$runs"); do
  for c in 0 1 2; do
    rm -rf "$work/out"
    mkdir -p "$work/out"
    sync
    start=$(date +%s%N)
    if ! run_case "$c"; then
      echo "${names[$c]} failed:" >&2
      cat "$work/sync.log" >&2 2>/dev/null || true
      exit 1
    fi
    end=$(date +%s%N)
    check_case "$c" || {
      echo "${names[$c]}: wrong output" >&2
      exit 1
    }
    if [ "$run" -gt 0 ]; then # run 0 is the warm-up
      walls[c]+="$(((end - start) / 1000000)) "
      rss[c]+="$(tail -n 1 "$work/time.txt") "
    fi
    printf '.' >&2
  done
done
echo >&2
rm -rf "$work/out"

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
dashes() { printf -- '-%.0s' $(seq "$1"); }
max() { tr ' ' '\n' | grep . | sort -n | tail -n 1; }
declare -a med
for c in 0 1 2; do med[c]="$(median <<<"${walls[c]}")"; done

printf '\n%s GiB (%s bytes), %s runs each, medians; MB = 10^6 bytes; ratios are speed ratios (higher = faster)\n\n' "$size_gib" "$size" "$runs"
printf '| %-38s | %8s | %7s | %13s | %16s | %13s |\n' command "wall s" "MB/s" "peak RSS MiB" "× curl+openssl" "× dd fsync"
printf '|%s|%s:|%s:|%s:|%s:|%s:|\n' "$(dashes 40)" "$(dashes 9)" "$(dashes 8)" "$(dashes 14)" "$(dashes 17)" "$(dashes 14)"
for c in 0 1 2; do
  awk -v name="${names[$c]}" -v ms="${med[c]}" -v size="$size" -v rss="$(max <<<"${rss[c]}")" \
    -v curl="${med[1]}" -v dd="${med[2]}" 'BEGIN {
      printf "| %-38s | %8.2f | %7.0f | %13.1f | %16.2f | %13.2f |\n",
        name, ms / 1000, size / (ms / 1000) / 1e6, rss / 1024, curl / ms, dd / ms }'
done
printf '\nall wall times (ms):\n'
for c in 0 1 2; do printf '  %-38s %s\n' "${names[$c]}" "${walls[c]}"; done
