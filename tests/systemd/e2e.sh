#!/bin/bash
# End-to-end test of packaging/models-fetch.service under a real systemd (PID 1).
#
# Boots a Debian bookworm rootfs (systemd 252) with systemd-nspawn, with the release binary at
# /usr/bin/models-fetch, the unit file exactly as shipped, a config, an index and a token file;
# serves the models from the host's 127.0.0.1 (the container shares the host's network
# namespace) and checks, from outside with nsenter: READY and STATUS, the published files and
# their owner, the token via LoadCredential (it reaches the origin and never the journal), the
# journal fields, reload (good and rejected config), the watchdog, stop, an offline start from
# the files on disk, and that a bad config (78), a bad index (65) or a missing token file
# (243/CREDENTIALS) ends "failed" with no restart loop; `systemd-analyze security` <= 1.5 and a
# clean `systemd-analyze verify` by systemd 252 itself.
# See the shared reference systemd-e2e.md for why each host step is needed.
#
# Run as root: tests/systemd/e2e.sh. About 20 s with the rootfs cached and the release binary
# built; the first run also builds the rootfs (about 45 s from the apt mirror), while a cold
# `cargo build --release` runs alongside it. Environment:
#   E2E_CACHE        where rootfs images are cached (default /var/cache/models-fetch-e2e)
#   MODELS_FETCH_BIN the binary to test (default: cargo build --release, target/release/...)
#   E2E_UNIT         the unit file to test (default packaging/models-fetch.service)
#   KEEP=1           keep the work directory (logs, the container's upper layer) for debugging
set -euo pipefail
umask 022
cd "$(dirname "$0")/../.."
REPO=$PWD

[ "$(id -u)" = 0 ] || { echo "e2e.sh: needs root (systemd-nspawn, cgroups, mounts)" >&2; exit 1; }

t0=$(date +%s.%N)
ts() { awk -v a="$t0" -v b="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[%6.1fs] %s\n", b-a, m}'; }

# --- host tools ------------------------------------------------------------------------------
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  ts "apt install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- the unit file, statically ------------------------------------------------------------
UNIT=${E2E_UNIT:-$REPO/packaging/models-fetch.service}
score=$(systemd-analyze security --offline=true "$UNIT" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
ts "systemd-analyze security --offline=true: exposure $score"
awk -v s="$score" 'BEGIN{exit !(s != "" && s <= 1.5)}' || {
  systemd-analyze security --offline=true "$UNIT" | grep '✗'; echo "FAIL: exposure ${score:-?} > 1.5"; exit 1; }

# --- the rootfs (in the background: network-bound) and the binary (CPU-bound) ---------------
# The rootfs is built once per package list and then only read, as the lower layer of an overlay.
CACHE=${E2E_CACHE:-/var/cache/models-fetch-e2e}
SUITE=bookworm
# procps: /bin/kill for ExecReload; libnss-systemd: names for dynamic users; ca-certificates: the
# daemon's HTTP client loads the system roots at start (a host without them cannot start it).
PKGS=systemd,systemd-sysv,dbus,libnss-systemd,procps,ca-certificates
KEY=$(printf '%s %s %s minbase' "$SUITE" "$PKGS" "$(dpkg --print-architecture)" | sha256sum | cut -c1-16)
LOWER=$CACHE/root-$KEY
mkdir -p "$CACHE"
(
  flock 9
  for old in "$CACHE"/root-*; do  # rootfs images of other package lists
    [ -d "$old" ] && [ "$old" != "$LOWER" ] && rm -rf "${old:?}"
  done
  if [ ! -x "$LOWER/lib/systemd/systemd" ]; then
    # The mirror apt already uses (deb822 sources, else the one-line format).
    MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
    MIRROR=${MIRROR:-$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
    [ -n "$MIRROR" ] || { echo "FAIL: no Debian mirror in apt's sources"; exit 1; }
    for attempt in 1 2; do
      ts "debootstrap $SUITE from $MIRROR (attempt $attempt)"
      rm -rf "${LOWER:?}.tmp"
      if debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$LOWER.tmp" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1; then
        rm -f "${LOWER:?}.tmp"/var/cache/apt/archives/*.deb
        mv "$LOWER.tmp" "$LOWER"
        break
      fi
      tail -20 "$CACHE/debootstrap.log"
      [ "$attempt" = 2 ] && exit 1
    done
  fi
) 9>"$CACHE/lock" &
ROOTFS_JOB=$!

if [ -z "${MODELS_FETCH_BIN:-}" ]; then
  ts "cargo build --release"
  cargo build --release --locked --quiet --bin models-fetch || { wait "$ROOTFS_JOB"; exit 1; }
  MODELS_FETCH_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/models-fetch
fi
"$MODELS_FETCH_BIN" run --help >/dev/null || { wait "$ROOTFS_JOB"; echo "FAIL: no 'run' subcommand"; exit 1; }
wait "$ROOTFS_JOB" || { echo "FAIL: the rootfs build failed"; exit 1; }
ts "rootfs $LOWER ($(du -sh "$LOWER" | cut -f1))"

# --- work directory, teardown ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/models-fetch-e2e.XXXXXX")
UP=$WORK/upper      # the container's writes land here; the cached rootfs stays untouched
ROOT=$WORK/root     # the overlay's mount point (mounted only inside nspawn's mount namespace)
SERVE=$WORK/serve   # what the origin serves: files/NAME, mirror/SHA256
mkdir -p "$UP" "$WORK/ovl" "$ROOT" "$SERVE/files" "$SERVE/mirror"
CG=models-fetch-e2e-$$
NSPAWN= LEADER= ORIGIN=

teardown() {
  set +e
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
    [ -n "$LEADER" ] && timeout 10 nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
    # SIGTERM makes nspawn power the container off; SIGKILL only if that hangs.
    if kill -0 "$NSPAWN" 2>/dev/null; then kill "$NSPAWN"; sleep 3; kill -9 "$NSPAWN" 2>/dev/null; fi
    wait "$NSPAWN" 2>/dev/null
  fi
  [ -n "$ORIGIN" ] && kill "$ORIGIN" 2>/dev/null && wait "$ORIGIN" 2>/dev/null
  for h in systemd unified; do
    [ -d "/sys/fs/cgroup/$h/$CG" ] && find "/sys/fs/cgroup/$h/$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "${WORK:?}"; fi
  return 0
}
trap teardown EXIT
trap 'exit 130' INT TERM

in_ct() { nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_COLORS=0 "$@"; }
show() { in_ct systemctl show -p "$1" --value models-fetch.service; }
fail() {
  set +e
  echo "FAIL: $*"
  if [ -n "$LEADER" ]; then
    in_ct systemctl status models-fetch --no-pager -l -n 0
    in_ct journalctl -b --no-pager -n 80 -o short-monotonic
  fi
  exit 1
}
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s
wait_for() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  fail "after ${secs}s: $what (StatusText: '$(show StatusText)')"
}
status_matches() { [[ "$(show StatusText)" =~ $1 ]]; }
state_is() { [ "$(show ActiveState)" = "$1" ]; }

# --- the origins on the host's 127.0.0.1 ------------------------------------------------------
TOKEN=hf_e2eSecret$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$TOKEN" >"$WORK/token"
python3 "$REPO/tests/systemd/origin.py" "$SERVE" "$WORK" "$WORK/token" 2>"$WORK/origin.err" &
ORIGIN=$!
for _ in $(seq 50); do [ -s "$WORK/hub_port" ] && break; sleep 0.1; done
[ -s "$WORK/hub_port" ] || { cat "$WORK/origin.err"; echo "FAIL: origin did not start"; exit 1; }
HUB=http://127.0.0.1:$(cat "$WORK/hub_port")

# Two fresh models per run (random bytes, so nothing cached anywhere can stand in for them):
# ajna-insight-v2 in a private Hub repository (needs the token; the bytes come from the cdn,
# another origin, which must never see the token); anahata-heart-v1 with a downloadUrl that
# answers 404, and the content-addressed mirror that has it.
head -c 12520 /dev/urandom >"$WORK/ajna-insight-v2.safetensors"
head -c 33256 /dev/urandom >"$WORK/anahata-heart-v1.safetensors"
SHA_AJNA=$(sha256sum <"$WORK/ajna-insight-v2.safetensors" | cut -d' ' -f1)
SHA_ANAHATA=$(sha256sum <"$WORK/anahata-heart-v1.safetensors" | cut -d' ' -f1)
COMMIT=$(printf 'commit %s' "$SHA_AJNA" | sha1sum | cut -d' ' -f1)
cp "$WORK/ajna-insight-v2.safetensors" "$SERVE/mirror/$SHA_AJNA"       # the cdn's blob
cp "$WORK/anahata-heart-v1.safetensors" "$SERVE/mirror/$SHA_ANAHATA"  # the mirror's file
printf '{ "e2e-org/ajna-insight": { "revision": "main", "path": "ajna-insight-v2.safetensors",
  "commit": "%s", "sha256": "%s", "size": 12520, "private": true } }\n' "$COMMIT" "$SHA_AJNA" >"$SERVE/hub.json"
echo '{ "models": [] }' >"$WORK/index.json"
entry() { # FILE ID CHAKRA SOURCE-FLAGS...
  local file=$1 id=$2 chakra=$3; shift 3
  "$MODELS_FETCH_BIN" entry "$file" --id "$id" --chakra "$chakra" "$@" --version 1.0.0 \
    --frequency-hz 432 --geometry-pattern hexagon --geometry-dimensions 6 --temporal-scope eternal \
    --tag e2e --dataset-id e2e --dataset-url https://example.org/d --training-repo https://example.org/t \
    --training-command train --license MIT --run-id e2e-$$ --index "$WORK/index.json" --write >/dev/null
}
entry "$WORK/ajna-insight-v2.safetensors" ajna-insight-v2 ajna --repo e2e-org/ajna-insight --revision main
entry "$WORK/anahata-heart-v1.safetensors" anahata-heart-v1 anahata --download-url "$HUB/files/gone.safetensors"
"$MODELS_FETCH_BIN" validate --deny-stubs "$WORK/index.json" >/dev/null

config() { # EXTRA-LINES: the test config, as an admin would write it
  cat <<EOF
index = "/etc/models-fetch/index.json"
store_dir = "/var/lib/models"
cache_dir = "/var/lib/models/hf-cache"
endpoint = "$HUB"
mirrors = ["$HUB/mirror"]
connect_timeout = "2s"
retry_base_delay = "1s"
$1
EOF
}

# --- stage the payload in the overlay's upper layer ------------------------------------------
install -D -m755 "$MODELS_FETCH_BIN" "$UP/usr/bin/models-fetch"
install -D -m644 "$UNIT" "$UP/etc/systemd/system/models-fetch.service"
mkdir -p "$UP/etc/systemd/system/multi-user.target.wants"
ln -s ../models-fetch.service "$UP/etc/systemd/system/multi-user.target.wants/models-fetch.service"
install -d -m755 "$UP/etc/models-fetch"
config 'deployed_models = ["ajna-insight-v2"]' >"$UP/etc/models-fetch/config.toml"
cp "$WORK/index.json" "$UP/etc/models-fetch/index.json"
install -m600 "$WORK/token" "$UP/etc/models-fetch/hf-token"
echo mfe2e >"$UP/etc/hostname"

# --- boot ------------------------------------------------------------------------------------
# The host's PID 1 is not systemd: the run gets its own cgroups, nspawn runs unregistered, and
# its /run/systemd/nspawn and the overlay live in a private mount namespace (gone with nspawn).
for h in systemd unified; do [ -d "/sys/fs/cgroup/$h" ] && mkdir -p "/sys/fs/cgroup/$h/$CG"; done
mkdir -p /run/systemd/nspawn
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-1}
ts "boot"
# shellcheck disable=SC2016 # expanded by the inner shells
bash -c 'for h in systemd unified; do [ -d /sys/fs/cgroup/$h/$0 ] && echo $$ > /sys/fs/cgroup/$h/$0/cgroup.procs; done
  exec unshare -m --propagation private sh -c '\''
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" &&
    mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn &&
    exec systemd-nspawn -D "$4" --register=no --keep-unit -b --console=pipe'\'' sh "$1" "$2" "$3" "$4"' \
  "$CG" "$LOWER" "$UP" "$WORK/ovl" "$ROOT" </dev/null >"$WORK/nspawn.log" 2>&1 &
NSPAWN=$!
for _ in $(seq 100); do LEADER=$(pgrep -P "$NSPAWN" -x systemd || true); [ -n "$LEADER" ] && break; sleep 0.1; done
[ -n "$LEADER" ] || { cat "$WORK/nspawn.log"; fail "the container's systemd did not start"; }
for _ in $(seq 300); do in_ct test -S /run/systemd/private 2>/dev/null && break; sleep 0.1; done
state=$(timeout 60 nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>&1 || true)
ts "booted: $(in_ct systemctl --version | head -1), system $state"
libs=$(in_ct ldd /usr/bin/models-fetch 2>&1) || fail "ldd /usr/bin/models-fetch: $libs"
! grep -q 'not found' <<<"$libs" || fail "the rootfs lacks libraries: $libs"

# --- 1. READY at once, then the model is fetched --------------------------------------------
wait_for 30 "models-fetch active (READY=1)" state_is active
started=$(show ExecMainStartTimestampMonotonic)
ready=$(show ActiveEnterTimestampMonotonic)
ts "READY $(( (ready - started) / 1000 )) ms after exec"
[ $(( ready - started )) -lt 2000000 ] || fail "READY took over 2 s"
wait_for 30 "STATUS '1/1 models ready ...'" status_matches '^1/1 models ready'
ts "model ready"
echo "----- systemctl status models-fetch"
in_ct systemctl status models-fetch --no-pager -l -n 10 || true
echo "-----"

# --- 2. published, verified, owned by the dynamic user, not world-readable -------------------
link=/var/lib/models/ajna-insight-v2/ajna-insight-v2.safetensors
in_ct test -L "$link" || fail "$link is not a symlink"
target=$(in_ct readlink -f "$link")
ts "$link -> $target"
HFREPO=/var/lib/private/models/hf-cache/models--e2e-org--ajna-insight
[ "$target" = "$HFREPO/blobs/$SHA_AJNA" ] || fail "link target $target, expected $HFREPO/blobs/$SHA_AJNA"
[ "$(in_ct readlink -f "$HFREPO/snapshots/$COMMIT/ajna-insight-v2.safetensors")" = "$target" ] || fail "snapshot link"
[ "$(in_ct cat "$HFREPO/refs/main")" = "$COMMIT" ] || fail "refs/main"
[ "$(in_ct sha256sum "$link" | cut -d' ' -f1)" = "$SHA_AJNA" ] || fail "sha256 of the published file"
[ "$(in_ct stat -c %U /var/lib/private/models)" = models-fetch ] || fail "state dir owner"
owner=$(in_ct stat -c '%U:%G %a' "$target")
[ "${owner%% *}" = models-fetch:models-fetch ] || fail "blob owner $owner"
[ $(( 8#${owner##* } & 7 )) = 0 ] || fail "blob is world-accessible ($owner)"
[ "$(in_ct stat -c '%a' /var/lib/private/models)" = 750 ] || fail "StateDirectoryMode"
in_ct test -s /var/lib/private/models/.models-fetch/state.json || fail "state.json"
echo "----- models-fetch status (as root in the container)"
in_ct models-fetch status --config /etc/models-fetch/config.toml || fail "models-fetch status"
in_ct models-fetch status --config /etc/models-fetch/config.toml --json >"$WORK/status.json" ||
  fail "models-fetch status --json"
echo "-----"

# --- 3. the token: read from $CREDENTIALS_DIRECTORY, sent to the endpoint's origin ----------
# (the repository is private: the model could not have been published without it), and never
# to the cdn a redirect points at.
grep -q "^hub [A-Z]* /e2e-org/ajna-insight/resolve/main/ajna-insight-v2.safetensors 302 auth=match" "$WORK/origin.log" ||
  { cat "$WORK/origin.log"; fail "the Hub never got the token from the credential"; }
grep -q "^cdn GET /blobs/$SHA_AJNA 200 auth=none" "$WORK/origin.log" ||
  { cat "$WORK/origin.log"; fail "no token-less download from the cdn"; }
grep -q '^cdn .* auth=[mo]' "$WORK/origin.log" && { cat "$WORK/origin.log"; fail "the token was sent to the cdn"; }
grep -q 'auth=other' "$WORK/origin.log" && fail "a wrong Authorization header was sent"

# --- 4. reload: a new config is applied without a restart; a bad one is rejected ------------
pid=$(show MainPID)
config 'deployed_models = ["ajna-insight-v2"]
[chakra_models]
anahata = ["anahata-heart-v1"]' | in_ct tee /etc/models-fetch/config.toml >/dev/null
in_ct systemctl reload models-fetch || fail "systemctl reload"
wait_for 30 "STATUS '2/2 models ready ...' after reload" status_matches '^2/2 models ready'
[ "$(show MainPID)" = "$pid" ] || fail "reload restarted the process"
in_ct journalctl -u models-fetch --no-pager -q -g '^reloaded' >/dev/null || fail "no 'reloaded' journal line"
[ "$(in_ct sha256sum /var/lib/models/anahata-heart-v1/anahata-heart-v1.safetensors | cut -d' ' -f1)" = "$SHA_ANAHATA" ] ||
  fail "anahata-heart-v1 (from the mirror) not published"
in_ct test -L /var/lib/models/by-chakra/anahata/anahata-heart-v1 || fail "by-chakra link"
ts "reload applied: $(show StatusText)"
in_ct cp /etc/models-fetch/config.toml /etc/models-fetch/config.good
{ config 'deployed_models = ["ajna-insight-v2"]'; echo 'no_such_key = 1'; } | in_ct tee /etc/models-fetch/config.toml >/dev/null
in_ct systemctl reload models-fetch || fail "systemctl reload (bad config)"
wait_for 10 "STATUS '... reload rejected' after a bad reload" status_matches 'reload rejected'
state_is active || fail "a rejected reload stopped the service"
[ "$(show MainPID)" = "$pid" ] || fail "a rejected reload restarted the process"
ts "bad reload rejected: $(show StatusText)"
in_ct mv /etc/models-fetch/config.good /etc/models-fetch/config.toml
in_ct systemctl reload models-fetch || fail "systemctl reload (restored config)"
wait_for 10 "STATUS back to '2/2 models ready'" status_matches '^2/2 models ready'

# --- 5. the journal: structured fields, the dynamic user, no token anywhere ------------------
in_ct journalctl -u models-fetch -o json --no-pager >"$WORK/journal.json"
python3 - "$WORK/journal.json" "$SHA_AJNA" <<'EOF' || fail "journal fields"
import json, sys
recs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
svc = [r for r in recs if r.get("_SYSTEMD_UNIT") == "models-fetch.service" and r.get("_UID") not in (None, "0")]
assert svc, "no records from the service's own (non-root) process"
with_id = [r for r in svc if r.get("MODEL_ID") == "ajna-insight-v2"]
assert with_id, "no record carries MODEL_ID=ajna-insight-v2"
assert any(r.get("SHA256") == sys.argv[2] for r in with_id), "no record carries the model's SHA256"
fields = sorted({k for r in svc for k in r if not k.startswith("_") and k.isupper()} -
                {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE"})
print("journal: %d records from uid %s via %s; fields seen: %s" % (
    len(svc), svc[0]["_UID"], svc[0].get("_TRANSPORT"), " ".join(fields)))
done = [r for r in with_id if "BYTES" in r]
if done:
    r = done[-1]
    print("  e.g.", {k: r.get(k) for k in ("MESSAGE", "MODEL_ID", "BYTES", "DURATION_MS", "SOURCE")})
EOF
n=$(in_ct journalctl -b -o export --no-pager | grep -c -F "$TOKEN" || true)
[ "$n" = 0 ] || fail "the token appears $n times in the journal"
in_ct grep -r -q -F "$TOKEN" /var/lib/private/models && fail "the token was written under /var/lib/private/models"
ts "journal checked; the token appears nowhere in it"

# --- 6. watchdog: pinged (every 15 s for WatchdogSec=30s) -----------------------------------
[ "$(show WatchdogUSec)" = 30s ] || fail "WatchdogUSec=$(show WatchdogUSec)"
ping_after_ready() { [ "$(show WatchdogTimestampMonotonic)" -gt $(( ready + 10000000 )) ]; }
wait_for 25 "a WATCHDOG=1 ping" ping_after_ready
ts "watchdog pinged $(( ($(show WatchdogTimestampMonotonic) - ready) / 1000 )) ms after READY"

# --- 7. stop within seconds; an offline start uses the files on disk ------------------------
s0=$(date +%s%N)
in_ct systemctl stop models-fetch
stop_ms=$(( ($(date +%s%N) - s0) / 1000000 ))
[ "$(show Result)" = success ] || fail "stop: Result=$(show Result)"
[ "$stop_ms" -lt 5000 ] || fail "stop took $stop_ms ms"
in_ct journalctl -u models-fetch --no-pager -q -g 'stopping' >/dev/null || fail "no 'stopping' journal line"
ts "stopped in $stop_ms ms, Result=success"
kill "$ORIGIN"; wait "$ORIGIN" 2>/dev/null || true; ORIGIN=
in_ct systemctl start models-fetch || fail "offline start"
wait_for 10 "offline: STATUS '2/2 models ready'" status_matches '^2/2 models ready'
ts "offline start: $(show StatusText)"
in_ct systemctl stop models-fetch

# --- 8. a bad config: exit 78, failed, no restart loop --------------------------------------
{ config 'deployed_models = ["ajna-insight-v2"]'; echo 'no_such_key = 1'; } | in_ct tee /etc/models-fetch/config.toml >/dev/null
in_ct systemctl start models-fetch 2>/dev/null && fail "start with a bad config succeeded"
no_restart() { # EXIT-STATUS
  [ "$(show ExecMainStatus)" = "$1" ] || fail "ExecMainStatus=$(show ExecMainStatus), expected $1"
  [ "$(show SubState)" = failed ] || fail "SubState=$(show SubState) (auto-restart would loop)"
  sleep 1.5
  [ "$(show NRestarts)" = 0 ] && state_is failed || fail "restarted: NRestarts=$(show NRestarts)"
}
no_restart 78
in_ct journalctl -u models-fetch --no-pager -q -n 10 -o cat | grep -q 'unknown field `no_such_key`' ||
  fail "the config error is not in the journal"
echo "----- systemctl status models-fetch (bad config)"
in_ct systemctl status models-fetch --no-pager -l -n 3 || true
echo "-----"
ts "bad config: exit 78, failed, NRestarts=0"

# --- 9. a bad index: exit 65, failed, no restart loop ---------------------------------------
config 'deployed_models = ["ajna-insight-v2"]' | in_ct tee /etc/models-fetch/config.toml >/dev/null
in_ct sed -i "s/$SHA_AJNA/not-a-sha256/" /etc/models-fetch/index.json
in_ct systemctl reset-failed models-fetch
in_ct systemctl start models-fetch 2>/dev/null && fail "start with a bad index succeeded"
no_restart 65
in_ct journalctl -u models-fetch --no-pager -q -n 5 -o cat | grep -q 'not-a-sha256' || fail "the index error is not in the journal"
ts "bad index: exit 65, failed, NRestarts=0"

# --- 10. no token file: systemd refuses the start (243/CREDENTIALS), no restart loop --------
in_ct rm /etc/models-fetch/hf-token
in_ct systemctl reset-failed models-fetch
in_ct systemctl start models-fetch 2>/dev/null && fail "start without the token file succeeded"
no_restart 243
ts "no token file: exit 243/CREDENTIALS, failed, NRestarts=0"

# --- 11. the unit file passes systemd's own checks, in the container (systemd 252) ----------
out=$(in_ct systemd-analyze verify /etc/systemd/system/models-fetch.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
warn=$(in_ct journalctl -b --no-pager -q -p warning -u models-fetch -g 'Unknown|ignoring|not supported' || true)
[ -z "$warn" ] || fail "systemd warned about the unit: $warn"
ts "systemd-analyze verify: clean"
n=$(in_ct journalctl -o export --no-pager | grep -c -F "$TOKEN" || true)
[ "$n" = 0 ] || fail "the token appears $n times in the journal (after every step)"

teardown
trap - EXIT
ts "PASS (container shut down, cgroups removed)"
# The plain closing line CI reads as a test runner's summary.
echo "systemd-e2e: 11 passed, 0 failed"
