#!/usr/bin/env bash
# The download benchmark (issue 6). Random files served by nginx on 127.0.0.1 in the Hub's URL
# layout (tests/e2e/origin.sh: the hub on 127.0.0.1 answers 302 to its CDN on 127.0.0.2), every
# tool measured side by side in one run, interleaved (the order rotates from run to run),
# medians of several runs. Loopback traffic only. Not a test: CI never runs it.
#
#   large   (a) one 1 GiB and one 4 GiB file: models-fetch sync vs dd conv=fsync, curl -o &&
#           openssl dgst, curl | tee | sha256sum, aria2c -x8 (&& sha256sum, or --checksum),
#           hf_hub_download (huggingface_hub 2.x; 0.36.x with and without hf_transfer), and
#           references: openssl dgst -sha256 alone, curl -o /dev/null, dd without fsync.
#           Wall time, CPU seconds (user+sys, children included) and peak RSS of each.
#   shards  (issue 12) one model of 4 random shards of SHARD_SIZE (model-0000k-of-00004.safetensors,
#           LFS: 302 to the CDN) + 6 small files kept in git (config.json, tokenizer.json,
#           model.safetensors.index.json, ...; the hub answers them, ETag = git blob sha1), one
#           repository at one commit with its Hub API (origin.sh api): models-fetch sync of its
#           set entry (artifact.commit + artifact.files) vs models-fetch sync of the same shards
#           as one file vs snapshot_download (huggingface_hub 2.x; 0.36.x with and without
#           hf_transfer). Targets: set ÷ one file <= 0.7, faster than each snapshot_download,
#           peak RSS <= 64 MiB.
#   small   (b) 200 x 1 MiB: models-fetch (one index of 200 entries, one sync of all, with
#           max_parallel_models 2, 4 and 8) vs aria2c -j 8 -i list.
#   resume  (c) models-fetch sync of the 1 GiB file (parallel ranged download) SIGKILLed when it
#           has written half the file (/proc/PID/io wchar), then run again: bytes the second run
#           was sent (nginx access logs, $body_bytes_sent).
#   warm    (d) 100 published models: `models-fetch sync` with nothing to do (no network, no
#           re-hash: checked with strace) and `models-fetch run` from spawn to READY=1.
#   slow    a rate-limited CDN (nginx limit_rate SLOW_RATE per connection, default 16m): one
#           SLOW_SIZE file (default 128M; at least 64M, two chunks, or it is streamed) by
#           models-fetch (which adds connections while they help, up to connections_per_file =
#           4), models-fetch with one connection, aria2c -x4 && sha256sum, curl | sha256sum and
#           hf_hub_download 2.4.0; and how many connections models-fetch used. Parallel ranges
#           pay where one connection is the bottleneck.
#   sha     is the SHA-256 hardware-accelerated: `models-fetch entry` vs `openssl dgst -sha256`
#           vs coreutils `sha256sum` (generic C) on the 1 GiB file, the sha_ni CPU flag and the
#           symbol perf samples land in.
#   profile where the CPU goes: perf stat, perf record (per thread, per symbol) and strace -c of
#           one models-fetch sync and one dd conv=fsync of the first size, and of one models-fetch
#           sync and one aria2c of the small files (in the default set when perf is installed).
#
# Wall time is whole-process (ms, date around GNU time); CPU and peak RSS from GNU time (%U %S
# %M; for a shell pipeline RSS is the largest single process). Sources are warm in the page
# cache; `sync` runs (untimed) before every measured command; every run starts from an empty
# output directory (a fresh cache for models-fetch and huggingface_hub).
#
# Usage: benches/fetch.sh [PART...]   (default: sha large shards small slow resume warm, and
#        profile when perf is installed). It prints markdown (tables, ratios, a met/missed line
#        per target) on stdout, progress on stderr; benches/RESULTS.md records a run. About 13
#        minutes on 2 cores without shards. A quick try of one part:
#        SHARD_SIZE=32M RUNS=1 WARMUP=0 benches/fetch.sh shards
# Env:   SIZES (default "1 4": GiB; "256M" for a quick try), RUNS (default 7 below 4 GiB and for
#        the small files, 3 from 4 GiB and for shards, at least 5 for warm), WARMUP (runs not
#        counted; default 1 below 4 GiB and for shards, else 0), SHARD_SIZE (256M; NM or NG),
#        RESUME_RUNS (5), SMALL_FILES (200), SLOW_SIZE (128M), SLOW_RATE (16m), SLOW_RUNS (3),
#        WARM_MODELS (100), BENCH_DIR (default: a new dir under /var/tmp, removed at the end
#        unless KEEP=1), MODELS_FETCH_BIN (default: cargo build --release), NGINX_BIN.
# Needs: nginx curl openssl aria2c time strace (apt: nginx curl openssl aria2 time strace), perf
#        for `profile`, python3 with venv; the Python clients are installed on first use into
#        benches/.venv/hf2 (.ci/tools/requirements.txt) and benches/.venv/hf036
#        (benches/requirements-hf036.txt).
# shellcheck disable=SC2016 # measured commands are bash -c strings: their $VARs (exported) expand there
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then
  parts=(sha large shards small slow resume warm)
  ! command -v perf >/dev/null || parts+=(profile)
fi
for p in "${parts[@]}"; do
  case "$p" in
  large | shards | small | slow | resume | warm | sha | profile) ;;
  *)
    echo "usage: $0 [large|shards|small|slow|resume|warm|sha|profile ...]" >&2
    exit 2
    ;;
  esac
done
want() {
  local p
  for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done
  return 1
}

# --- sizes -------------------------------------------------------------------------------------
read -r -a size_specs <<<"${SIZES:-1 4}"
declare -a size_bytes size_label size_tag
for s in "${size_specs[@]}"; do
  if [[ "$s" =~ ^([1-9][0-9]*)[Mm]$ ]]; then
    size_bytes+=($((BASH_REMATCH[1] << 20)))
    size_label+=("${BASH_REMATCH[1]} MiB")
    size_tag+=("${BASH_REMATCH[1]}m")
  elif [[ "$s" =~ ^([1-9][0-9]*)[Gg]?$ ]]; then
    size_bytes+=($((BASH_REMATCH[1] << 30)))
    size_label+=("${BASH_REMATCH[1]} GiB")
    size_tag+=("${BASH_REMATCH[1]}g")
  else
    echo "SIZES: $s is not N (GiB) or NM (MiB)" >&2
    exit 2
  fi
done
n_small="${SMALL_FILES:-200}"
n_warm="${WARM_MODELS:-100}"
[ "$n_warm" -le "$n_small" ] || n_small="$n_warm"
shard_spec="${SHARD_SIZE:-256M}"
if [[ "$shard_spec" =~ ^([1-9][0-9]*)[Mm]$ ]]; then
  shard_size=$((BASH_REMATCH[1] << 20))
elif [[ "$shard_spec" =~ ^([1-9][0-9]*)[Gg]$ ]]; then
  shard_size=$((BASH_REMATCH[1] << 30))
else
  echo "SHARD_SIZE: $shard_spec is not NM (MiB) or NG (GiB)" >&2
  exit 2
fi

# --- tools -------------------------------------------------------------------------------------
need=(curl openssl dd sha256sum python3)
! want large || need+=(aria2c)
! want small || need+=(aria2c)
! want slow || need+=(aria2c)
! want warm || need+=(strace)
! want profile || need+=(perf strace)
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing (apt-get install nginx curl openssl aria2 time strace linux-perf)" >&2
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
venv() { # DIR REQUIREMENTS: creates the venv once
  [ -x "$1/bin/python" ] && return
  echo "installing $2 into $1..." >&2
  python3 -m venv "$1"
  "$1/bin/pip" install --quiet --disable-pip-version-check -r "$2"
}
if want large || want shards || want slow; then
  venv "$here/.venv/hf2" "$repo/.ci/tools/requirements.txt"
fi
if want large || want shards; then
  venv "$here/.venv/hf036" "$here/requirements-hf036.txt"
fi
export HF2="$here/.venv/hf2/bin/python" HF036="$here/.venv/hf036/bin/python"

if [ -z "${MODELS_FETCH_BIN:-}" ]; then
  echo "building models-fetch (release)..." >&2
  (cd "$repo" && cargo build --release --locked --quiet)
  MODELS_FETCH_BIN="$repo/target/release/models-fetch"
fi

# --- work dir and origin -----------------------------------------------------------------------
work="${BENCH_DIR:-$(mktemp -d /var/tmp/models-fetch-bench.XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
need_kib=$((n_small * 2048 + 65536))
if want large || want resume || want sha || want profile; then
  for i in "${!size_bytes[@]}"; do
    want large || [ "$i" = 0 ] || continue
    need_kib=$((need_kib + size_bytes[i] * 5 / 2048))
  done
fi
# shards: the 4 shards and their one-file twin, one output at a time, hf_transfer's temp files.
! want shards || need_kib=$((need_kib + shard_size * 4 * 4 / 1024))
free_kib="$(df -Pk "$work" | awk 'NR == 2 { print $4 }')"
if [ "$free_kib" -lt "$need_kib" ]; then
  echo "not enough space in $work: need about $((need_kib >> 20)) GiB" >&2
  exit 2
fi
# A copy: a build running meanwhile must not swap the binary under the benchmark.
cp "$MODELS_FETCH_BIN" "$work/models-fetch"
export MF="$work/models-fetch" HERE="$here"
origin="$work/origin"
export OUT="$work/out" WORK="$work"
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
hub="http://127.0.0.1:$hub_port"
bash "$repo/tests/e2e/origin.sh" init "$origin" "$hub_port" "$cdn_port" --slow-rate "${SLOW_RATE:-16m}" >/dev/null

# An index entry: ID SHA256 SIZE REPO PATH
entry() {
  printf '{"id": "%s", "version": "1.0.0", "chakra": "ajna", "frequencyHz": 432,
  "geometry": {"pattern": "hexagon", "dimensions": 2}, "temporalScope": "eternal",
  "semanticTags": ["bench"], "dataset": {"id": "bench", "url": "https://example.org/bench"},
  "training": {"repo": "https://example.org/bench", "command": "none"},
  "artifact": {"filename": "%s", "sha256": "%s", "sizeBytes": %s, "format": "safetensors",
    "repo": "%s", "path": "%s"}, "license": "MIT", "provenance": {"runId": "bench"}}' \
    "$1" "$5" "$2" "$3" "$4" "$5"
}
# A config: FILE INDEX OUT_DIR MODELS... (env EXTRA: more lines)
config() {
  local file="$1" index="$2" out="$3" models
  shift 3
  models="$(printf '"%s", ' "$@")"
  cat >"$file" <<EOF
index = "$index"
cache_dir = "$out/hf-cache"
store_dir = "$out/store"
endpoint = "$hub"
deployed_models = [${models%, }]
${EXTRA:-}
EOF
}

declare -a big_sha big_src
if want large || want resume || want sha || want profile; then
  for i in "${!size_bytes[@]}"; do
    want large || [ "$i" = 0 ] || continue # resume, sha and profile use the first size only
    tag="${size_tag[i]}"
    big_src[i]="$work/big-$tag.bin"
    echo "writing a random ${size_label[i]} file..." >&2
    head -c "${size_bytes[i]}" /dev/urandom >"${big_src[i]}"
    read -r sha served _commit < <(bash "$repo/tests/e2e/origin.sh" add "$origin" "bench-org/big-$tag" \
      model.safetensors "${big_src[i]}")
    [ "$served" = "${size_bytes[i]}" ] || exit 1
    big_sha[i]="$sha"
    mkdir -p "$work/big-$tag"
    entry "big-$tag" "$sha" "${size_bytes[i]}" "bench-org/big-$tag" model.safetensors |
      { printf '{"models": [\n'; cat; printf ']}\n'; } >"$work/big-$tag/index.json"
    config "$work/big-$tag/config.toml" "$work/big-$tag/index.json" "$OUT" "big-$tag"
  done
fi
if want small || want warm || want profile; then
  echo "writing $n_small random 1 MiB files..." >&2
  mkdir -p "$work/small"
  : >"$work/small/entries"
  : >"$work/small/urls"
  for i in $(seq -w 1 "$n_small"); do
    f="$work/small/f$i.safetensors"
    head -c $((1 << 20)) /dev/urandom >"$f"
    read -r sha _size _commit < <(bash "$repo/tests/e2e/origin.sh" add "$origin" bench-org/small "f$i.safetensors" "$f")
    {
      [ "$i" = "$(seq -w 1 "$n_small" | head -n 1)" ] || echo ","
      entry "small-$i" "$sha" $((1 << 20)) bench-org/small "f$i.safetensors"
      echo
    } >>"$work/small/entries"
    echo "$hub/bench-org/small/resolve/main/f$i.safetensors" >>"$work/small/urls"
  done
  { printf '{"models": [\n'; cat "$work/small/entries"; printf ']}\n'; } >"$work/small/index.json"
  mapfile -t small_ids < <(seq -f 'small-%0'"${#n_small}"'g' 1 "$n_small")
fi
if want shards; then
  # One repository at one commit, as a transformers checkpoint is on the Hub: 4 LFS shards
  # (302 to the CDN) and small files kept in git (answered by the hub, ETag = git blob sha1),
  # with the Hub API snapshot_download needs (origin.sh api). Its twin: the shards' bytes as
  # one file of another repository. No .gitattributes: `models-fetch lock` leaves it out by
  # default and snapshot_download would fetch it, so both get the same 10 files.
  sdir="$work/shards"
  mkdir -p "$sdir/src"
  echo "writing 4 random $((shard_size >> 20)) MiB shards and the small files..." >&2
  shard_names=()
  for k in 1 2 3 4; do
    shard_names+=("model-0000$k-of-00004.safetensors")
    head -c "$shard_size" /dev/urandom >"$sdir/src/model-0000$k-of-00004.safetensors"
  done
  python3 - "$sdir/src" "$shard_size" "${shard_names[@]}" <<'PY'
import json, os, random, sys
out, shard_size, shards = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rnd = random.Random(12)
def dump(name, value):
    with open(os.path.join(out, name), "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
layers = 32
dump("config.json", {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
     "intermediate_size": 14336, "num_hidden_layers": layers, "num_attention_heads": 32,
     "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 8192,
     "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "torch_dtype": "bfloat16", "transformers_version": "5.24.0"})
dump("generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True, "temperature": 0.6, "top_p": 0.9})
dump("special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
dump("tokenizer_config.json", {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
     "model_max_length": 8192, "tokenizer_class": "LlamaTokenizerFast", "clean_up_tokenization_spaces": False})
# A BPE tokenizer of 32000 tokens and 31000 merges: 1.7 MB, as real ones of this vocabulary are.
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
while len(vocab) < 32000:
    vocab.setdefault("\u2581" * rnd.randint(0, 1) + "".join(rnd.choice(letters) for _ in range(rnd.randint(2, 9))), len(vocab))
tokens = list(vocab)
dump("tokenizer.json", {"version": "1.0", "added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(tokens[:3])],
     "model": {"type": "BPE", "unk_token": "<unk>", "vocab": vocab,
               "merges": [f"{rnd.choice(tokens[3:])} {rnd.choice(tokens[3:])}" for _ in range(31000)]}})
# The shard index: each layer's tensors in the shard that holds that quarter of the layers.
weight_map = {"model.embed_tokens.weight": shards[0], "lm_head.weight": shards[-1], "model.norm.weight": shards[-1]}
for layer in range(layers):
    for t in ["input_layernorm", "post_attention_layernorm", "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj",
              "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"]:
        weight_map[f"model.layers.{layer}.{t}.weight"] = shards[layer * len(shards) // layers]
dump("model.safetensors.index.json", {"metadata": {"total_size": shard_size * len(shards)},
     "weight_map": dict(sorted(weight_map.items()))})
PY
  shard_small=(config.json generation_config.json model.safetensors.index.json special_tokens_map.json
    tokenizer.json tokenizer_config.json)
  : >"$sdir/files"
  shard_bytes=0
  for f in "${shard_small[@]}" "${shard_names[@]}"; do
    storage=--git
    [[ "$f" != *-of-* ]] || storage=''
    read -r sha size shard_commit oid < <(bash "$repo/tests/e2e/origin.sh" add "$origin" bench-org/shards "$f" \
      "$sdir/src/$f" $storage)
    printf '%s %s %s %s\n' "$f" "$sha" "$size" "$oid" >>"$sdir/files" # oid: empty for a shard
    shard_bytes=$((shard_bytes + size))
  done
  [ "$(bash "$repo/tests/e2e/origin.sh" api "$origin" bench-org/shards)" = "$shard_commit" ] || exit 1
  n_shard_files=$(wc -l <"$sdir/files")
  # The set entry (primary file: the shard index, by README's rule), and the one-file entry.
  read -r _ index_sha index_size _ < <(grep '^model.safetensors.index.json ' "$sdir/files")
  entry shards "$index_sha" "$index_size" bench-org/shards model.safetensors.index.json |
    python3 -c 'import json, sys
e = json.load(sys.stdin)
del e["artifact"]["path"]
e["artifact"]["commit"] = sys.argv[1]
e["artifact"]["files"] = []
for line in open(sys.argv[2]):
    path, sha, size, *oid = line.split()
    e["artifact"]["files"].append(dict(path=path, sha256=sha, sizeBytes=int(size), **({"gitOid": oid[0]} if oid else {})))
e["artifact"]["files"].sort(key=lambda f: f["path"])
json.dump({"models": [e]}, sys.stdout, indent=1)' "$shard_commit" "$sdir/files" >"$sdir/set.json"
  config "$sdir/set.toml" "$sdir/set.json" "$OUT" shards
  cat "${shard_names[@]/#/$sdir/src/}" >"$sdir/one.safetensors"
  read -r one_sha one_size _commit < <(bash "$repo/tests/e2e/origin.sh" add "$origin" bench-org/shards-one \
    model.safetensors "$sdir/one.safetensors")
  [ "$one_size" = $((shard_size * 4)) ] || exit 1
  entry shards-one "$one_sha" "$one_size" bench-org/shards-one model.safetensors |
    { printf '{"models": [\n'; cat; printf ']}\n'; } >"$sdir/one.json"
  config "$sdir/one.toml" "$sdir/one.json" "$OUT" shards-one
fi
if want slow; then
  slow_spec="${SLOW_SIZE:-128M}"
  [[ "$slow_spec" =~ ^([1-9][0-9]*)[Mm]$ ]] || {
    echo "SLOW_SIZE: $slow_spec is not NM (MiB)" >&2
    exit 2
  }
  slow_size=$((BASH_REMATCH[1] << 20))
  slow_src="$work/slow.bin"
  head -c "$slow_size" /dev/urandom >"$slow_src"
  read -r slow_sha _size _commit < <(bash "$repo/tests/e2e/origin.sh" add "$origin" bench-org/slow \
    model.safetensors "$slow_src" --slow)
  mkdir -p "$work/slow"
  entry slow "$slow_sha" "$slow_size" bench-org/slow model.safetensors |
    { printf '{"models": [\n'; cat; printf ']}\n'; } >"$work/slow/index.json"
  config "$work/slow/config.toml" "$work/slow/index.json" "$OUT" slow
  EXTRA="connections_per_file = 1" config "$work/slow/one.toml" "$work/slow/index.json" "$OUT" slow
fi
bash "$repo/tests/e2e/origin.sh" start "$origin"
for _ in $(seq 100); do
  port_free 127.0.0.2 "$cdn_port" || break
  sleep 0.05
done
cat "$work"/*.bin "$work"/small/*.safetensors "$work"/shards/src/* "$work"/shards/one.safetensors >/dev/null 2>&1 || true # warm

# --- measuring ---------------------------------------------------------------------------------
declare -A WALL CPU RSS MCPU
clk_tck="$(getconf CLK_TCK)"
# CPU time of the whole machine so far (user, nice, system, irq, softirq of every process and
# the kernel: nginx's sending and loopback's receiving included), ms.
machine_cpu() { awk -v hz="$clk_tck" '/^cpu / { printf "%d", ($2 + $3 + $4 + $7 + $8) * 1000 / hz; exit }' /proc/stat; }
# measure KEY RECORD CMD: runs the bash command CMD under GNU time after an untimed sync; when
# RECORD is 1, appends its wall ms, CPU ms (user+sys), peak RSS KiB and the machine's CPU ms
# meanwhile to KEY's lists.
measure() {
  local key="$1" record="$2" cmd="$3" start end u s m m0 m1
  sync
  m0=$(machine_cpu)
  start=$(date +%s%N)
  if ! /usr/bin/time -f '%U %S %M' -o "$work/time.txt" bash -c "$cmd"; then
    echo "$key failed: $cmd" >&2
    tail -n 20 "$work/cmd.log" >&2 2>/dev/null || true
    return 1
  fi
  end=$(date +%s%N)
  m1=$(machine_cpu)
  [ "$record" = 1 ] || return 0
  read -r u s m < <(tail -n 1 "$work/time.txt")
  WALL[$key]+="$(((end - start) / 1000000)) "
  CPU[$key]+="$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%d", (u + s) * 1000 }') "
  RSS[$key]+="$m "
  MCPU[$key]+="$((m1 - m0)) "
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' | grep . | sort -n | tail -n 1; }
# Median of the per-run ratios A[i] / B[i] of two lists.
paired() { paste -d/ <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) | awk -F/ '{ print $1 / $2 }' | median; }
verdict() { # LABEL VALUE OP LIMIT DETAIL
  if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == "<=" && v <= l) || (op == "<" && v < l)) }'; then
    printf -- '- %s: %s %s %s: **met**%s\n' "$1" "$2" "$3" "$4" "${5:+ ($5)}"
  else
    printf -- '- %s: %s %s %s: **missed**%s\n' "$1" "$2" "$3" "$4" "${5:+ ($5)}"
  fi
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
# A markdown table's header and rule: "HEADER:WIDTH" per column, WIDTH negative = left-aligned.
header() {
  local col name w line='|' rule='|'
  for col in "$@"; do
    name="${col%:*}" w="${col##*:}"
    if [ "$w" -lt 0 ]; then
      line+="$(printf ' %-*s |' $((-w)) "$name")"
      rule+="$(printf -- '-%.0s' $(seq $((2 - w))))|"
    else
      line+="$(printf ' %*s |' "$w" "$name")"
      rule+="$(printf -- '-%.0s' $(seq $((w + 1)))):|"
    fi
  done
  printf '%s\n%s\n' "$line" "$rule"
}
fresh() {
  rm -rf "$OUT"
  mkdir -p "$OUT"
}
size_of() { stat -Lc %s "$1" 2>/dev/null || echo 0; }
log_bytes() { # sum of $body_bytes_sent in the access logs from line FROM_HUB+1 / FROM_CDN+1 on
  { tail -n +$(($1 + 1)) "$origin/logs/hub.log"; tail -n +$(($2 + 1)) "$origin/logs/cdn.log"; } |
    awk -F'\t' '{ s += $3 } END { print s + 0 }'
}
log_lines() { echo "$(wc -l <"$origin/logs/hub.log") $(wc -l <"$origin/logs/cdn.log")"; }
# After a part's runs: ends the progress dots, removes the outputs, prints the load.
end_runs() {
  echo >&2
  rm -rf "$OUT"
  echo "load after: $(load)"
  echo
}

echo "# models-fetch download benchmark"
echo
dev="$(df -P "$work" | awk 'NR == 2 { print $1 }')"
journal="$(cat "/sys/fs/ext4/${dev#/dev/}/journal_task" 2>/dev/null || echo '?')"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep -o -m1 sha_ni /proc/cpuinfo || echo 'no sha_ni')); $(uname -sr); $(free -g | awk '/^Mem/ { print $2 }') GiB RAM; $work on $(findmnt -no FSTYPE -T "$work") ($dev, journal: $journal, rotational: $(cat "/sys/block/${dev#/dev/}/queue/rotational" 2>/dev/null || echo '?'))"
# The commit of the work tree the binary was built in (MODELS_FETCH_BIN may be another tree's).
bin_tree="$(git -C "$(dirname "$MODELS_FETCH_BIN")" rev-parse --show-toplevel 2>/dev/null || echo "$repo")"
echo "origin: nginx (1 worker, sendfile) hub 127.0.0.1:$hub_port -> CDN 127.0.0.2:$cdn_port; $("$MF" --version 2>/dev/null || echo models-fetch) from $MODELS_FETCH_BIN (commit $(git -C "$bin_tree" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$bin_tree" status --porcelain src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ', src modified'))"
echo "MB = 10^6 bytes. Load average (1/5/15 min) is shown per part: other work shares the 2 cores."

# --- (sha) is the SHA-256 hardware-accelerated? ------------------------------------------------
if want sha; then
  export SRC="${big_src[0]}" SHA="${big_sha[0]}" MODEL="big-${size_tag[0]}" IDX="$work/big-${size_tag[0]}/index.json"
  names=("models-fetch entry F (sha2 crate)" "openssl dgst -sha256 F (SHA-NI)" "sha256sum F (coreutils, generic C)")
  cmds=('exec "$MF" entry "$SRC" --id "$MODEL" --index "$IDX" >"$OUT/sum"'
    'exec openssl dgst -sha256 -r "$SRC" >"$OUT/sum"'
    'exec sha256sum "$SRC" >"$OUT/sum"')
  runs=3
  echo
  echo "## SHA-256 throughput on the ${size_label[0]} file (page cache), $runs runs each, interleaved"
  echo
  echo "load before: $(load)"
  for run in $(seq 1 "$runs"); do
    for c in 0 1 2; do
      fresh
      measure "sha$c" 1 "${cmds[c]}"
      grep -q "$SHA" "$OUT/sum" || {
        echo "${names[c]}: wrong digest" >&2
        exit 1
      }
      printf . >&2
    done
  done
  echo >&2
  echo "load after: $(load)"
  echo
  header command:-36 "wall s:7" MB/s:6 "CPU s:6" "speed x sha256sum:17" "time / openssl:14"
  for c in 0 1 2; do
    awk -v name="${names[c]}" -v ms="$(median <<<"${WALL[sha$c]}")" -v cpu="$(median <<<"${CPU[sha$c]}")" \
      -v ref="$(median <<<"${WALL[sha2]}")" -v ossl="$(median <<<"${WALL[sha1]}")" -v size="${size_bytes[0]}" 'BEGIN {
      printf "| %-36s | %7.2f | %6.0f | %6.2f | %17.2f | %14.2f |\n", name, ms / 1000, size / ms / 1000, cpu / 1000, ref / ms, ms / ossl }'
  done
  echo
  echo "CPU flag: $(grep -o -m1 sha_ni /proc/cpuinfo || echo 'sha_ni absent')"
  if command -v perf >/dev/null; then
    fresh
    perf record -q -o "$work/perf.entry" -- "$MF" entry "$SRC" --id "$MODEL" --index "$IDX" >/dev/null 2>"$work/perf.log" || true
    echo "perf samples of \`models-fetch entry\`, top symbols:"
    echo
    echo '```'
    perf report -i "$work/perf.entry" --stdio --no-children --sort dso,sym 2>/dev/null | grep -v '^#' | grep . | head -n 4
    echo '```'
  fi
fi

# --- (a) one large file ------------------------------------------------------------------------
if want large; then
  L_names=("models-fetch sync"
    "dd bs=1M conv=fsync (disk floor)"
    "curl -o f && openssl dgst -sha256 f"
    "curl \\| tee f \\| sha256sum"
    "aria2c -x8 -s8 && sha256sum f"
    "aria2c -x8 -s8 --checksum=sha-256"
    "hf_hub_download, huggingface_hub 2.4.0"
    "hf_hub_download, 0.36.2"
    "hf_hub_download, 0.36.2 + hf_transfer"
    "openssl dgst -sha256 F (hash alone)"
    "curl -o /dev/null (receive alone)"
    "dd bs=1M, no fsync (page-cache write alone)")
  L_verifies=(yes - yes yes yes yes no no no - - -)
  L_durable=(yes yes no no yes yes no no no - - no)
  L_cmds=('exec "$MF" sync --config "$CFG" >"$WORK/cmd.log" 2>&1'
    'exec dd if="$SRC" of="$OUT/f" bs=1M conv=fsync status=none'
    'curl -sfL -o "$OUT/f" "$URL" && openssl dgst -sha256 -r "$OUT/f" >"$OUT/sum"'
    'set -o pipefail; curl -sfL "$URL" | tee "$OUT/f" | sha256sum >"$OUT/sum"'
    'aria2c --no-conf -q -x 8 -s 8 -d "$OUT" -o f "$URL" && sha256sum "$OUT/f" >"$OUT/sum"'
    'exec aria2c --no-conf -q -x 8 -s 8 --checksum=sha-256="$SHA" -d "$OUT" -o f "$URL"'
    'exec "$HF2" "$HERE/hf_download.py" "$REPO" model.safetensors "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"'
    'exec "$HF036" "$HERE/hf_download.py" "$REPO" model.safetensors "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"'
    'HF_HUB_ENABLE_HF_TRANSFER=1 exec "$HF036" "$HERE/hf_download.py" "$REPO" model.safetensors "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"'
    'exec openssl dgst -sha256 -r "$SRC" >"$OUT/sum"'
    'exec curl -sfL -o /dev/null "$URL"'
    'exec dd if="$SRC" of="$OUT/f" bs=1M status=none')
  n_cases=${#L_cmds[@]}
  export HF_ENDPOINT="$hub" HF_HOME="$work/hf-home" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
    HF_HUB_DISABLE_IMPLICIT_TOKEN=1 HF_HUB_ENABLE_HF_TRANSFER=0
  check_large() {
    case "$1" in
    0)
      [ "$(size_of "$OUT/store/$MODEL/model.safetensors")" = "$SIZE" ] || return 1
      [ "$2" != first ] || cmp -s "$OUT/store/$MODEL/model.safetensors" "$SRC"
      ;;
    1 | 5 | 11) [ "$(size_of "$OUT/f")" = "$SIZE" ] ;;
    2 | 3 | 4 | 9) grep -q "$SHA" "$OUT/sum" ;;
    6 | 7 | 8) [ "$(size_of "$(cat "$OUT/path")")" = "$SIZE" ] ;;
    10) true ;;
    esac
  }
  for i in "${!size_bytes[@]}"; do
    tag="${size_tag[i]}"
    export SRC="${big_src[i]}" SHA="${big_sha[i]}" SIZE="${size_bytes[i]}" MODEL="big-$tag" \
      REPO="bench-org/big-$tag" CFG="$work/big-$tag/config.toml" \
      URL="$hub/bench-org/big-$tag/resolve/main/model.safetensors"
    if [ "${size_bytes[i]}" -ge $((4 << 30)) ]; then
      runs="${RUNS:-3}" warmup="${WARMUP:-0}"
    else
      runs="${RUNS:-7}" warmup="${WARMUP:-1}"
    fi
    echo
    echo "## (a) one ${size_label[i]} file ($SIZE bytes): $warmup warm-up + $runs runs of each, interleaved, medians"
    echo
    echo "load before: $(load)"
    first=first
    for run in $(seq $((1 - warmup)) "$runs"); do
      for k in $(seq 0 $((n_cases - 1))); do
        c=$(((k + run + n_cases) % n_cases)) # rotate the order from run to run
        fresh
        measure "L$i.$c" "$([ "$run" -ge 1 ] && echo 1 || echo 0)" "${L_cmds[c]}"
        check_large "$c" "$first" || {
          echo "${L_names[c]}: wrong output" >&2
          exit 1
        }
        printf . >&2
      done
      first=''
    done
    end_runs
    header command:-43 sha256?:-7 durable:-7 "wall s:7" MB/s:6 "CPU s:6" "CPU / openssl:13" "RSS MiB:7" \
      "time / dd fsync:15" "time / models-fetch:19"
    mf="$(median <<<"${WALL[L$i.0]}")" dd="$(median <<<"${WALL[L$i.1]}")" ossl="$(median <<<"${CPU[L$i.9]}")"
    for c in $(seq 0 $((n_cases - 1))); do
      awk -v name="${L_names[c]}" -v ver="${L_verifies[c]}" -v dur="${L_durable[c]}" -v ms="$(median <<<"${WALL[L$i.$c]}")" \
        -v cpu="$(median <<<"${CPU[L$i.$c]}")" -v rss="$(maxof <<<"${RSS[L$i.$c]}")" -v size="$SIZE" \
        -v mf="$mf" -v dd="$dd" -v ossl="$ossl" 'BEGIN {
        printf "| %-43s | %-7s | %-7s | %7.2f | %6.0f | %6.2f | %13.2f | %7.1f | %15.2f | %19.2f |\n",
          name, ver, dur, ms / 1000, size / ms / 1000, cpu / 1000, cpu / ossl, rss / 1024, ms / dd, ms / mf }'
    done
    echo
    echo "\`time / dd fsync\`, \`time / models-fetch\`: wall-time ratios (above 1 = slower than it). CPU: user+sys of the process and its children. RSS: the peak over the runs."
    echo
    echo "Targets, ${size_label[i]}:"
    echo
    verdict "wall time ÷ dd conv=fsync" "$(awk -v a="$mf" -v b="$dd" 'BEGIN { printf "%.2f", a / b }')" "<=" 1.10 \
      "paired per run: $(paired "${WALL[L$i.0]}" "${WALL[L$i.1]}" | xargs printf '%.2f')"
    for c in 2 3 4 5 6; do
      verdict "faster than ${L_names[c]} (models-fetch ÷ it)" \
        "$(awk -v a="$mf" -v b="$(median <<<"${WALL[L$i.$c]}")" 'BEGIN { printf "%.2f", a / b }')" "<" 1 \
        "paired per run: $(paired "${WALL[L$i.0]}" "${WALL[L$i.$c]}" | xargs printf '%.2f')"
    done
    verdict "CPU s ÷ openssl dgst alone" \
      "$(awk -v a="$(median <<<"${CPU[L$i.0]}")" -v b="$ossl" 'BEGIN { printf "%.2f", a / b }')" "<=" 1.30 \
      "$(median <<<"${CPU[L$i.0]}" | awk '{ printf "%.2f", $1 / 1000 }') s vs $(awk -v b="$ossl" 'BEGIN { printf "%.2f", b / 1000 }') s"
    verdict "peak RSS MiB" "$(maxof <<<"${RSS[L$i.0]}" | awk '{ printf "%.1f", $1 / 1024 }')" "<=" 48
    echo
    echo "all runs (wall ms / CPU ms / RSS KiB):"
    echo
    echo '```'
    for c in $(seq 0 $((n_cases - 1))); do
      printf '%-42s %s/ %s/ %s\n' "${L_names[c]}" "${WALL[L$i.$c]}" "${CPU[L$i.$c]}" "${RSS[L$i.$c]}"
    done
    echo '```'
  done
fi

# --- shards: one model of 4 shards + small files, vs the same bytes as one file ----------------
if want shards; then
  H_names=("models-fetch sync, the set (4 shards + ${#shard_small[@]} small files)"
    "models-fetch sync, the shards' bytes as one file"
    "snapshot_download, huggingface_hub 2.4.0"
    "snapshot_download, 0.36.2"
    "snapshot_download, 0.36.2 + hf_transfer")
  H_files=("$n_shard_files" 1 "$n_shard_files" "$n_shard_files" "$n_shard_files")
  H_bytes=("$shard_bytes" $((shard_size * 4)) "$shard_bytes" "$shard_bytes" "$shard_bytes")
  H_verifies=(yes yes no no no)
  H_durable=(yes yes no no no)
  H_cmds=('exec "$MF" sync --config "$SHARDS/set.toml" >"$WORK/cmd.log" 2>&1'
    'exec "$MF" sync --config "$SHARDS/one.toml" >"$WORK/cmd.log" 2>&1'
    'exec "$HF2" "$HERE/hf_snapshot.py" bench-org/shards "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"'
    'exec "$HF036" "$HERE/hf_snapshot.py" bench-org/shards "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"'
    'HF_HUB_ENABLE_HF_TRANSFER=1 exec "$HF036" "$HERE/hf_snapshot.py" bench-org/shards "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"')
  n_cases=${#H_cmds[@]}
  export SHARDS="$sdir" HF_ENDPOINT="$hub" HF_HOME="$work/hf-home" HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_IMPLICIT_TOKEN=1 HF_HUB_ENABLE_HF_TRANSFER=0
  # same_files DIR FIRST: DIR holds the set's files and nothing else, byte for byte when FIRST
  # is "first" (the first round), else by size.
  same_files() {
    local dir="$1" path _sha size _oid n
    n="$(find -L "$dir" -type f 2>/dev/null | wc -l)"
    [ "$n" = "$n_shard_files" ] || {
      echo "$dir: $n files, not $n_shard_files" >&2
      return 1
    }
    while read -r path _sha size _oid; do
      [ "$(size_of "$dir/$path")" = "$size" ] || {
        echo "$dir/$path: $(size_of "$dir/$path") bytes, not $size" >&2
        return 1
      }
      [ "$2" != first ] || cmp -s "$dir/$path" "$SHARDS/src/$path" || {
        echo "$dir/$path differs from the source" >&2
        return 1
      }
    done <"$SHARDS/files"
  }
  # The published model, its Hub cache (refs/main -> the commit -> every file) for models-fetch;
  # the snapshot folder snapshot_download printed.
  check_shards() {
    local hc="$OUT/hf-cache/models--bench-org--shards"
    case "$1" in
    0)
      same_files "$OUT/store/shards" "$2" && same_files "$hc/snapshots/$shard_commit" '' &&
        [ "$(cat "$hc/refs/main" 2>/dev/null)" = "$shard_commit" ]
      ;;
    1)
      [ "$(size_of "$OUT/store/shards-one/model.safetensors")" = $((shard_size * 4)) ] || return 1
      [ "$2" != first ] || cmp -s "$OUT/store/shards-one/model.safetensors" "$SHARDS/one.safetensors"
      ;;
    *)
      [ "$(cat "$OUT/path")" = "$OUT/hf/models--bench-org--shards/snapshots/$shard_commit" ] &&
        same_files "$(cat "$OUT/path")" "$2"
      ;;
    esac
  }
  runs="${RUNS:-3}" warmup="${WARMUP:-1}"
  echo
  echo "## shards: one model of 4 x $((shard_size >> 20)) MiB shards + ${#shard_small[@]} small files ($shard_bytes bytes, one repository at one commit) vs the same shards as one file: $warmup warm-up + $runs runs of each, interleaved, medians"
  echo
  echo "load before: $(load)"
  first=first
  declare -A REQS
  for run in $(seq $((1 - warmup)) "$runs"); do
    for k in $(seq 0 $((n_cases - 1))); do
      c=$(((k + run + n_cases) % n_cases)) # rotate the order from run to run
      fresh
      read -r h0 c0 < <(log_lines)
      measure "H$c" "$([ "$run" -ge 1 ] && echo 1 || echo 0)" "${H_cmds[c]}"
      check_shards "$c" "$first" || {
        echo "${H_names[c]}: wrong output" >&2
        exit 1
      }
      read -r h1 c1 < <(log_lines)
      REQS[$c]+="$((h1 - h0))+$((c1 - c0)) "
      printf . >&2
    done
    first=''
  done
  # This machine's floor for the set: any client must at least receive its bytes (curl to
  # /dev/null, one connection per file, all at once: the machine's CPU, nginx's included) and
  # hash them (openssl, one file after another: its CPU), and it has $(nproc) CPUs to do both.
  floor_cmds=("cut -d' ' -f1 \"\$SHARDS/files\" | xargs -P 16 -I{} curl -sfL -o /dev/null \"\$HF_ENDPOINT/bench-org/shards/resolve/$shard_commit/{}\""
    'cd "$SHARDS/src" && exec openssl dgst -sha256 $(cut -d" " -f1 ../files) >/dev/null')
  for run in $(seq 1 "$runs"); do
    for c in 0 1; do
      measure "F$c" 1 "${floor_cmds[c]}"
      printf . >&2
    done
  done
  end_runs
  header command:-53 sha256?:-7 durable:-7 files:5 "requests:9" "wall s:7" MB/s:6 "CPU s:6" "RSS MiB:7" \
    "time / one file:15" "time / set:10"
  set_ms="$(median <<<"${WALL[H0]}")" one_ms="$(median <<<"${WALL[H1]}")"
  for c in $(seq 0 $((n_cases - 1))); do
    awk -v name="${H_names[c]}" -v ver="${H_verifies[c]}" -v dur="${H_durable[c]}" -v files="${H_files[c]}" \
      -v reqs="$(tr ' ' '\n' <<<"${REQS[$c]}" | grep . | sort -u | paste -sd/)" \
      -v ms="$(median <<<"${WALL[H$c]}")" -v cpu="$(median <<<"${CPU[H$c]}")" -v rss="$(maxof <<<"${RSS[H$c]}")" \
      -v size="${H_bytes[c]}" -v one="$one_ms" -v set="$set_ms" 'BEGIN {
      printf "| %-53s | %-7s | %-7s | %5d | %9s | %7.2f | %6.0f | %6.2f | %7.1f | %15.2f | %10.2f |\n",
        name, ver, dur, files, reqs, ms / 1000, size / ms / 1000, cpu / 1000, rss / 1024, ms / one, ms / set }'
  done
  echo
  echo "The shards are LFS files (the hub answers 302 to the CDN); the ${#shard_small[@]} small files ($((shard_bytes - shard_size * 4)) bytes) are kept in git (answered by the hub itself, ETag = git blob sha1). The one file is the 4 shards concatenated, in another repository. models-fetch: its defaults (max_parallel_models 2, max_parallel_files 4, connections_per_file 4); snapshot_download: its defaults (8 threads), into a fresh cache_dir. requests: nginx log lines per run, hub+CDN (API, HEAD and GET). CPU: user+sys of the process and its children. RSS: the peak over the runs. \`time / one file\`, \`time / set\`: wall-time ratios."
  if [ "$shard_size" -le $((50 << 20)) ]; then
    echo
    echo "huggingface_hub 0.36.2 hands a file to hf_transfer only above 5 x 10 MiB: these $((shard_size >> 20)) MiB shards took its plain path."
  fi
  echo
  echo "Targets (issue 12):"
  echo
  verdict "set wall time ÷ one-file wall time" "$(awk -v a="$set_ms" -v b="$one_ms" 'BEGIN { printf "%.2f", a / b }')" "<=" 0.70 \
    "paired per run: $(paired "${WALL[H0]}" "${WALL[H1]}" | xargs printf '%.2f')"
  for c in 2 3 4; do
    verdict "set faster than ${H_names[c]} (models-fetch ÷ it)" \
      "$(awk -v a="$set_ms" -v b="$(median <<<"${WALL[H$c]}")" 'BEGIN { printf "%.2f", a / b }')" "<" 1 \
      "paired per run: $(paired "${WALL[H0]}" "${WALL[H$c]}" | xargs printf '%.2f')"
  done
  verdict "peak RSS MiB, models-fetch sync of the set" "$(maxof <<<"${RSS[H0]}" | awk '{ printf "%.1f", $1 / 1024 }')" "<=" 64
  echo
  receive_ms="$(median <<<"${MCPU[F0]}")" hash_ms="$(median <<<"${CPU[F1]}")"
  floor_ms=$(((receive_ms + hash_ms) / $(nproc)))
  echo
  echo "This machine's floor for the set: receiving its bytes costs $receive_ms ms of CPU (machine-wide, nginx included: ${#shard_small[@]}+4 \`curl -o /dev/null\` at once, $(median <<<"${WALL[F0]}") ms wall), hashing them $hash_ms ms (\`openssl dgst -sha256\`); on $(nproc) CPUs no client can take less than ($receive_ms + $hash_ms) / $(nproc) = $floor_ms ms, before it writes a byte. The machine's CPU during models-fetch's runs: set $(median <<<"${MCPU[H0]}") ms, one file $(median <<<"${MCPU[H1]}") ms (medians)."
  echo
  verdict "the 0.70 target is within reach here (floor ÷ one-file wall time)" \
    "$(awk -v a="$floor_ms" -v b="$one_ms" 'BEGIN { printf "%.2f", a / b }')" "<=" 0.70
  echo "- set wall time ÷ floor: $(awk -v a="$set_ms" -v b="$floor_ms" 'BEGIN { printf "%.2f", a / b }'); one file ÷ floor: $(awk -v a="$one_ms" -v b="$floor_ms" 'BEGIN { printf "%.2f", a / b }')"
  echo
  echo "all runs (wall ms / CPU ms / RSS KiB / machine CPU ms):"
  echo
  echo '```'
  for c in $(seq 0 $((n_cases - 1))); do
    printf '%-53s %s/ %s/ %s/ %s\n' "${H_names[c]}" "${WALL[H$c]}" "${CPU[H$c]}" "${RSS[H$c]}" "${MCPU[H$c]}"
  done
  printf '%-53s %s/ %s/ %s/ %s\n' "floor: curl -o /dev/null, every file at once" "${WALL[F0]}" "${CPU[F0]}" "${RSS[F0]}" "${MCPU[F0]}"
  printf '%-53s %s/ %s/ %s/ %s\n' "floor: openssl dgst -sha256, every file" "${WALL[F1]}" "${CPU[F1]}" "${RSS[F1]}" "${MCPU[F1]}"
  echo '```'
fi

# --- (b) many small files ----------------------------------------------------------------------
if want small; then
  S_par=(2 4 8)
  S_names=()
  S_cmds=()
  for p in "${S_par[@]}"; do
    EXTRA="max_parallel_models = $p" config "$work/small/p$p.toml" "$work/small/index.json" "$OUT" "${small_ids[@]}"
    S_names+=("models-fetch sync, max_parallel_models = $p")
    S_cmds+=("exec \"\$MF\" sync --config \"$work/small/p$p.toml\" >\"\$WORK/cmd.log\" 2>&1")
  done
  S_names+=("aria2c -j 8 -i list")
  S_cmds+=("exec aria2c --no-conf -q -j 8 -i \"$work/small/urls\" -d \"\$OUT/aria\"")
  n_cases=${#S_cmds[@]}
  runs="${RUNS:-7}"
  total=$((n_small << 20))
  echo
  echo "## (b) $n_small x 1 MiB files (one index, one sync of all): 1 warm-up + $runs runs of each, interleaved, medians"
  echo
  echo "load before: $(load)"
  for run in $(seq 0 "$runs"); do
    for k in $(seq 0 $((n_cases - 1))); do
      c=$(((k + run) % n_cases))
      fresh
      measure "S$c" "$([ "$run" -ge 1 ] && echo 1 || echo 0)" "${S_cmds[c]}"
      if [ "$c" -lt $((n_cases - 1)) ]; then
        got="$(find "$OUT/store" -maxdepth 2 -path '*/small-*/f*.safetensors' | wc -l)"
      else
        got="$(find "$OUT/aria" -type f ! -name '*.aria2' | wc -l)" # named after the CDN URL (the sha256)
      fi
      [ "$got" = "$n_small" ] || {
        echo "${S_names[c]}: $got files of $n_small" >&2
        exit 1
      }
      printf . >&2
    done
  done
  end_runs
  aria="$(median <<<"${WALL[S$((n_cases - 1))]}")"
  header command:-42 "wall s:7" files/s:7 MB/s:6 "CPU s:6" "RSS MiB:7" "time / aria2c:13"
  for c in $(seq 0 $((n_cases - 1))); do
    awk -v name="${S_names[c]}" -v ms="$(median <<<"${WALL[S$c]}")" -v cpu="$(median <<<"${CPU[S$c]}")" \
      -v rss="$(maxof <<<"${RSS[S$c]}")" -v n="$n_small" -v total="$total" -v aria="$aria" 'BEGIN {
      printf "| %-42s | %7.2f | %7.0f | %6.0f | %6.2f | %7.1f | %13.2f |\n", name, ms / 1000, n / ms * 1000, total / ms / 1000, cpu / 1000, rss / 1024, ms / aria }'
  done
  echo
  echo "aria2c neither verifies a sha256 nor publishes atomically; both fsync every file."
  echo
  echo "Target: faster than aria2c -j 8 -i list"
  echo
  for c in $(seq 0 $((n_cases - 2))); do
    verdict "${S_names[c]} (÷ aria2c)" \
      "$(awk -v a="$(median <<<"${WALL[S$c]}")" -v b="$aria" 'BEGIN { printf "%.2f", a / b }')" "<" 1 \
      "paired per run: $(paired "${WALL[S$c]}" "${WALL[S$((n_cases - 1))]}" | xargs printf '%.2f')"
  done
  echo
  echo "all runs (wall ms):"
  echo
  echo '```'
  for c in $(seq 0 $((n_cases - 1))); do printf '%-42s %s\n' "${S_names[c]}" "${WALL[S$c]}"; done
  echo '```'
fi

# --- slow: a rate-limited CDN ------------------------------------------------------------------
if want slow; then
  export SRC="$slow_src" SHA="$slow_sha" SIZE="$slow_size" SLOW_DIR="$work/slow" \
    URL="$hub/bench-org/slow/resolve/main/model.safetensors" HF_ENDPOINT="$hub" HF_HOME="$work/hf-home" \
    HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_IMPLICIT_TOKEN=1
  W_names=("models-fetch sync (connections added while they help)" "models-fetch sync, connections_per_file = 1"
    "aria2c -x4 -s4 && sha256sum f" "curl \\| tee f \\| sha256sum" "hf_hub_download, huggingface_hub 2.4.0")
  W_cmds=('MODELS_FETCH_LOG=models_fetch=debug exec "$MF" sync --config "$SLOW_DIR/config.toml" >"$WORK/cmd.log" 2>"$WORK/slow.log"'
    'exec "$MF" sync --config "$SLOW_DIR/one.toml" >"$WORK/cmd.log" 2>&1'
    'aria2c --no-conf -q -x 4 -s 4 -d "$OUT" -o f "$URL" && sha256sum "$OUT/f" >"$OUT/sum"'
    'set -o pipefail; curl -sfL "$URL" | tee "$OUT/f" | sha256sum >"$OUT/sum"'
    'exec "$HF2" "$HERE/hf_download.py" bench-org/slow model.safetensors "$OUT/hf" >"$OUT/path" 2>"$WORK/cmd.log"')
  runs="${SLOW_RUNS:-3}"
  echo
  echo "## slow CDN: one $((slow_size >> 20)) MiB file at ${SLOW_RATE:-16m}B/s per connection (nginx limit_rate): $runs runs of each, interleaved, medians"
  echo
  echo "load before: $(load)"
  used=''
  for run in $(seq 1 "$runs"); do
    for k in 0 1 2 3 4; do
      c=$(((k + run) % 5))
      fresh
      measure "W$c" 1 "${W_cmds[c]}"
      case "$c" in
      0 | 1) cmp -s "$OUT/store/slow/model.safetensors" "$SRC" ;;
      2 | 3) grep -q "$SHA" "$OUT/sum" ;;
      4) [ "$(size_of "$(cat "$OUT/path")")" = "$SIZE" ] ;;
      esac || {
        echo "${W_names[c]}: wrong output" >&2
        exit 1
      }
      if [ "$c" = 0 ]; then # the ramp's last decision (debug log), else one
        n="$({ grep -o 'connections=[0-9]*' "$work/slow.log" || true; } | tail -n 1 | cut -d= -f2)"
        used+="${n:-1} "
      fi
      printf . >&2
    done
  done
  end_runs
  header command:-55 "wall s:7" MB/s:6 "CPU s:6" "RSS MiB:7" "time / models-fetch:19"
  mf="$(median <<<"${WALL[W0]}")"
  for c in 0 1 2 3 4; do
    awk -v name="${W_names[c]}" -v ms="$(median <<<"${WALL[W$c]}")" -v cpu="$(median <<<"${CPU[W$c]}")" \
      -v rss="$(maxof <<<"${RSS[W$c]}")" -v size="$SIZE" -v mf="$mf" 'BEGIN {
      printf "| %-55s | %7.2f | %6.1f | %6.2f | %7.1f | %19.2f |\n", name, ms / 1000, size / ms / 1000, cpu / 1000, rss / 1024, ms / mf }'
  done
  echo
  echo "Connections models-fetch ended with, per run: ${used% }."
  echo
  for c in 2 3 4; do
    verdict "faster than ${W_names[c]} (models-fetch ÷ it)" \
      "$(awk -v a="$mf" -v b="$(median <<<"${WALL[W$c]}")" 'BEGIN { printf "%.2f", a / b }')" "<" 1
  done
fi

# --- (c) kill at ~50% and resume ---------------------------------------------------------------
if want resume; then
  tag="${size_tag[0]}" size="${size_bytes[0]}"
  cfg="$work/big-$tag/config.toml"
  runs="${RESUME_RUNS:-5}"
  echo
  echo "## (c) SIGKILL at ~50% of a ${size_label[0]} parallel download (up to 4 connections, ranges of at most 32 MiB), then sync again: $runs runs"
  echo
  echo "load before: $(load)"
  echo
  header run:3 "killed at (written):19" "sent before kill:16" "sidecar records:15" "sent to the 2nd run:22" \
    "received, then lost:19" "2nd run wall s:14"
  second_pct='' killed_pct='' lost_pct=''
  exec {nap}<> <(:) # read -t on a pipe nobody writes to: a sleep without a fork
  for run in $(seq 1 "$runs"); do
    fresh
    sync
    read -r h0 c0 < <(log_lines)
    "$MF" sync --config "$cfg" >"$work/cmd.log" 2>&1 &
    pid=$!
    # Poll the bytes it has written (wchar) every ~2 ms, without forking, and kill at half.
    written=0
    for _ in $(seq 30000); do # at most about a minute
      written=0
      while read -r key value; do
        [ "$key" != wchar: ] || written="$value"
      done <"/proc/$pid/io" 2>/dev/null || break
      if [ "$written" -ge $((size / 2)) ]; then
        kill -KILL "$pid"
        break
      fi
      read -r -t 0.002 -u "$nap" _ || true
    done
    if wait "$pid" 2>/dev/null; then
      echo "resume: the first run finished before it was killed" >&2
      exit 1
    fi
    sleep 0.3 # nginx logs an aborted request when it notices the close
    partial="$(find "$OUT/hf-cache" -name '*.incomplete' | head -n 1)"
    # The sidecar's byte ranges on disk, as % of the file.
    recorded="$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print("%.1f%%" % (100 * sum(e - s for s, e in d["written"]) / d["size"]))' "$partial.chunks" 2>/dev/null || echo '?')"
    first_sent="$(log_bytes "$h0" "$c0")"
    read -r h1 c1 < <(log_lines)
    sync
    start=$(date +%s%N)
    "$MF" sync --config "$cfg" >"$work/cmd.log" 2>&1 || {
      echo "resume: the second run failed" >&2
      cat "$work/cmd.log" >&2
      exit 1
    }
    end=$(date +%s%N)
    sleep 0.3
    cmp -s "$OUT/store/big-$tag/model.safetensors" "${big_src[0]}" || {
      echo "resume: the published file differs" >&2
      exit 1
    }
    second="$(log_bytes "$h1" "$c1")"
    second_pct+="$(awk -v b="$second" -v s="$size" 'BEGIN { printf "%.1f", 100 * b / s }') "
    killed_pct+="$(awk -v w="$written" -v s="$size" 'BEGIN { printf "%.1f", 100 * w / s }') "
    lost_pct+="$(awk -v w="$written" -v b="$second" -v s="$size" 'BEGIN { printf "%.1f", 100 * (w + b - s) / s }') "
    awk -v run="$run" -v w="$written" -v f="$first_sent" -v rec="$recorded" -v b="$second" \
      -v s="$size" -v ms="$(((end - start) / 1000000))" 'BEGIN {
      printf "| %3d | %18.1f%% | %15.1f%% | %15s | %10.0f MB = %5.1f%% | %18.1f%% | %14.2f |\n", run, 100 * w / s, 100 * f / s, rec, b / 1e6, 100 * b / s, 100 * (w + b - s) / s, ms / 1000 }'
  done
  rm -rf "$OUT"
  echo
  echo "load after: $(load)"
  echo
  echo "Bytes are nginx's \$body_bytes_sent over both logs (hub and CDN). \"Sent before kill\" includes bytes still in socket buffers when the process died. \"Received, then lost\": written before the kill + sent to the second run - the file, i.e. bytes the first run had written that the second run fetched again (the buffers in flight and what the sidecar had not recorded yet)."
  echo
  verdict "(c) bytes sent to the second run, median, % of the file" "$(median <<<"$second_pct")" "<=" 55 \
    "killed at $(median <<<"$killed_pct")% written, median; received then lost: $(median <<<"$lost_pct")% of the file"
fi

# --- (d) warm start ----------------------------------------------------------------------------
if want warm; then
  ids=("${small_ids[@]:0:$n_warm}")
  wdir="$work/warm"
  mkdir -p "$wdir"
  config "$wdir/config.toml" "$work/small/index.json" "$wdir/out" "${ids[@]}"
  "$MF" sync --config "$wdir/config.toml" >"$work/cmd.log" 2>&1 || {
    cat "$work/cmd.log" >&2
    exit 1
  }
  runs="${RUNS:-5}"
  [ "$runs" -ge 5 ] || runs=5
  echo
  echo "## (d) warm start: $n_warm published models (1 MiB each), $runs runs of each, interleaved, medians"
  echo
  echo "load before: $(load)"
  read -r h0 c0 < <(log_lines)
  export WCFG="$wdir/config.toml"
  ready_ms=''
  for run in $(seq 0 "$runs"); do
    measure warm_sync "$([ "$run" -ge 1 ] && echo 1 || echo 0)" 'exec "$MF" sync --config "$WCFG" >"$WORK/cmd.log" 2>&1' ||
      exit 1
    sync
    read -r ms rc < <(python3 "$here/notify_ready.py" "$work/run.log" "$MF" run --config "$wdir/config.toml")
    [ "$rc" = 0 ] || {
      echo "models-fetch run exited $rc after SIGTERM" >&2
      tail "$work/run.log" >&2
      exit 1
    }
    [ "$run" -lt 1 ] || ready_ms+="$ms "
    printf . >&2
  done
  echo >&2
  read -r h1 c1 < <(log_lines)
  strace -f -qq -e trace=connect,openat -o "$work/strace.txt" "$MF" sync --config "$wdir/config.toml" >/dev/null 2>&1
  blob_reads="$(grep -c 'blobs/[0-9a-f]\{64\}", O_RDONLY' "$work/strace.txt" || true)"
  connects="$(grep -c 'connect(.*AF_INET' "$work/strace.txt" || true)"
  echo "load after: $(load)"
  echo
  header command:-44 "median ms:9" "CPU ms:7" "RSS MiB:7"
  printf '| %-44s | %9s | %7s | %7.1f |\n' "models-fetch sync (all $n_warm ready)" "$(median <<<"${WALL[warm_sync]}")" \
    "$(median <<<"${CPU[warm_sync]}")" "$(maxof <<<"${RSS[warm_sync]}" | awk '{ print $1 / 1024 }')"
  printf '| %-44s | %9s | %7s | %7s |\n' "models-fetch run: spawn -> READY=1" "$(median <<<"$ready_ms")" - -
  echo
  echo "requests to the origin during the warm runs: $((h1 - h0 + c1 - c0)); under strace, one more sync: $connects AF_INET connect(), $blob_reads blob opened for reading"
  echo
  echo "all runs (ms): sync ${WALL[warm_sync]}; run to READY $ready_ms"
  echo
  verdict "(d) warm models-fetch sync, ms" "$(median <<<"${WALL[warm_sync]}")" "<" 200 \
    "network requests: $((h1 - h0 + c1 - c0 + connects)), blob reads: $blob_reads"
  verdict "(d) models-fetch run to READY=1, ms" "$(median <<<"$ready_ms")" "<" 200
fi

# --- profile -----------------------------------------------------------------------------------
# profile NAME CMD...: perf stat, perf record (samples per thread, top symbols) and strace -c
# (system calls by count) of one run of CMD, each from an empty output directory.
profile() {
  local name="$1"
  shift
  fresh
  sync
  perf stat -o "$work/stat.txt" -e task-clock,context-switches,cpu-migrations,page-faults -- "$@" >/dev/null 2>&1
  fresh
  sync
  perf record -q -F 999 -o "$work/perf.data" -- "$@" >/dev/null 2>&1
  fresh
  sync
  strace -f -qq -c -o "$work/strace.txt" -- "$@" >/dev/null 2>&1
  echo
  echo "### $name"
  echo
  echo "perf stat:"
  echo
  echo '```'
  grep -E 'task-clock|context|migrations|faults|elapsed|user|sys' "$work/stat.txt"
  echo '```'
  echo
  echo "perf record, samples per thread and object:"
  echo
  echo '```'
  perf report -i "$work/perf.data" --stdio --no-children --sort comm,dso 2>/dev/null | grep -v '^#' | grep . | head -n 12
  echo '```'
  echo
  echo "symbols with at least 1% of the samples:"
  echo
  echo '```'
  perf report -i "$work/perf.data" --stdio --no-children --sort comm,sym --percent-limit 1 2>/dev/null |
    grep -v '^#' | grep . | head -n 30
  echo '```'
  echo
  echo "system calls (strace -f -c; counts only, times under strace are not real):"
  echo
  echo '```'
  awk 'BEGIN { n = split("total recvfrom read pread64 write pwrite64 fsync fdatasync sync_file_range rename renameat2 symlink mkdir openat futex epoll_wait", order, " ") }
    NR > 2 && $0 !~ /^-/ { calls[$NF] = $4; errors[$NF] = ($5 ~ /^[0-9]+$/) ? $5 : "" }
    END {
      for (i = 1; i <= n; i++) if (order[i] in calls)
        printf "%-16s %8s calls%s\n", order[i], calls[order[i]], errors[order[i]] != "" ? "  (" errors[order[i]] " errors)" : ""
    }' "$work/strace.txt"
  echo '```'
}
if want profile; then
  echo
  echo "## profile: where the CPU goes"
  echo
  echo "load before: $(load)"
  profile "models-fetch sync, one ${size_label[0]} file" "$MF" sync --config "$work/big-${size_tag[0]}/config.toml"
  profile "dd bs=1M conv=fsync, the same file" dd if="${big_src[0]}" of="$OUT/f" bs=1M conv=fsync status=none
  EXTRA="max_parallel_models = 2" config "$work/small/profile.toml" "$work/small/index.json" "$OUT" "${small_ids[@]}"
  profile "models-fetch sync, $n_small x 1 MiB (max_parallel_models = 2)" "$MF" sync --config "$work/small/profile.toml"
  profile "aria2c -j 8 -i list, $n_small x 1 MiB" aria2c --no-conf -q -j 8 -i "$work/small/urls" -d "$OUT/aria"
  rm -rf "$OUT"
  echo
  echo "load after: $(load)"
fi
