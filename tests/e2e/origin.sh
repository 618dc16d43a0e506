#!/usr/bin/env bash
# Builds and runs a Hugging Face Hub-like origin (nginx) in a directory of its own, for the
# end-to-end tests (tests/it/e2e.rs) and the benchmark (benches/fetch.sh). Loopback only.
#
#   origin.sh init DIR HUB_PORT CDN_PORT [--token-file FILE] [--slow-rate RATE]
#       renders DIR/nginx.conf from nginx.conf.in: hub on 127.0.0.1:HUB_PORT, CDN on
#       127.0.0.2:CDN_PORT; FILE holds the token private repos require (default rate 2m).
#   origin.sh add DIR ORG/NAME PATH SRC [--revision REV] [--commit HEX] [--private] [--slow|--git]
#       serves file SRC as PATH of the repo at revision REV (default main) and at its commit
#       (default: derived from the repo and revision); prints "SHA256 SIZE COMMIT".
#       An LFS file (the default) answers 302 to the CDN with X-Linked-Etag/-Size; --slow
#       redirects to the rate-limited CDN location. --git serves it the way the Hub serves a
#       small file kept in git: from the hub itself, 200 with ETag = its git blob sha1 and no
#       X-Linked-*; it then prints "SHA256 SIZE COMMIT GIT_SHA1".
#   origin.sh api DIR ORG/NAME [REV]
#       publishes the Hub API of the repo at revision REV (default main), every file added to
#       it so far: GET /api/models/ORG/NAME/revision/{REV,COMMIT} (model info: sha, siblings),
#       GET /api/models/ORG/NAME (for main) and GET /api/models/ORG/NAME/tree/{REV,COMMIT}
#       (the recursive listing, one page, whatever the query: path, size, oid, lfs). Static
#       files: run it again after more adds; nginx needs no reload. Prints the commit.
#   origin.sh start DIR | stop DIR      nginx as a daemon (pid file DIR/nginx.pid)
#   origin.sh run DIR                   nginx in the foreground, one process (for tests)
#
# Logs: DIR/logs/hub.log and DIR/logs/cdn.log, one tab-separated line per request:
# request line, status, body bytes sent, Range header, auth=yes|no (never the token).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
nginx="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
# nginx reads $NGINX as sockets inherited from a binary upgrade (and then skips daemonizing).
unset NGINX

die() {
  echo "origin.sh: $*" >&2
  exit 2
}

cmd="${1:-}"
[ $# -ge 2 ] || die "usage: origin.sh init|add|api|start|stop|run DIR ..."
dir="$2"
shift 2

case "$cmd" in
init)
  [ $# -ge 2 ] || die "usage: origin.sh init DIR HUB_PORT CDN_PORT [--token-file FILE] [--slow-rate RATE]"
  hub_port="$1" cdn_port="$2"
  shift 2
  token='' slow_rate=2m
  while [ $# -gt 0 ]; do
    case "$1" in
    --token-file) token="$(cat "$2")" && shift 2 ;;
    --slow-rate) slow_rate="$2" && shift 2 ;;
    *) die "init: unknown option $1" ;;
    esac
  done
  if [ -n "$token" ] && [[ ! "$token" =~ ^[A-Za-z0-9_-]+$ ]]; then
    die "init: the test token must be made of [A-Za-z0-9_-]"
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  mkdir -p "$dir/cdn" "$dir/hub.d" "$dir/hubapi" "$dir/repos" "$dir/logs" "$dir/tmp"
  user_line="# (not root: nginx keeps the current user)"
  if [ "$(id -u)" = 0 ]; then
    # As root, nginx would serve as nobody, who cannot read a private temp dir.
    user_line="user root;"
  fi
  sed -e "s|@PREFIX@|$dir|g" -e "s|@HUB_PORT@|$hub_port|g" -e "s|@CDN_PORT@|$cdn_port|g" \
    -e "s|@SLOW_RATE@|$slow_rate|g" -e "s|@USER_LINE@|$user_line|g" \
    "$here/nginx.conf.in" >"$dir/nginx.conf"
  umask 077
  printf 'HUB_PORT=%s\nCDN_PORT=%s\nTOKEN=%s\n' "$hub_port" "$cdn_port" "$token" >"$dir/origin.env"
  ;;

add)
  [ $# -ge 3 ] || die "usage: origin.sh add DIR ORG/NAME PATH SRC [--revision REV] [--commit HEX] [--private] [--slow|--git]"
  repo="$1" path="$2" src="$3"
  shift 3
  revision=main commit='' private='' cdn_path='' git=''
  while [ $# -gt 0 ]; do
    case "$1" in
    --revision) revision="$2" && shift 2 ;;
    --commit) commit="$2" && shift 2 ;;
    --private) private=1 && shift ;;
    --slow) cdn_path=slow/ && shift ;;
    --git) git=1 && shift ;;
    *) die "add: unknown option $1" ;;
    esac
  done
  [ -z "$git" ] || [ -z "$cdn_path" ] || die "add: --git and --slow exclude each other"
  [ -f "$dir/origin.env" ] || die "add: run init first"
  # shellcheck source=/dev/null # written by init: HUB_PORT, CDN_PORT, TOKEN
  . "$dir/origin.env"
  [ -z "$private" ] || [ -n "$TOKEN" ] || die "add: --private needs init --token-file"
  if [ -z "$commit" ]; then
    if [[ "$revision" =~ ^[0-9a-f]{40}$ ]]; then
      commit="$revision"
    else
      commit="$(printf '%s@%s' "$repo" "$revision" | sha1sum | cut -c1-40)"
    fi
  fi
  revisions=("$revision")
  [ "$commit" = "$revision" ] || revisions+=("$commit")
  sha="$(openssl dgst -sha256 -r "$src" | cut -c1-64)"
  size="$(stat -c %s "$src")"
  ln -f "$src" "$dir/cdn/$sha" 2>/dev/null || cp "$src" "$dir/cdn/$sha"
  # The git blob id: of the file itself when it is kept in git, else of its LFS pointer.
  if [ -n "$git" ]; then
    oid="$({ printf 'blob %s\0' "$size"; cat "$src"; } | sha1sum | cut -c1-40)"
  else
    pointer="$(printf 'version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %s\n' "$sha" "$size")"
    oid="$({ printf 'blob %s\0' $((${#pointer} + 1)); printf '%s\n' "$pointer"; } | sha1sum | cut -c1-40)"
  fi
  conf="$dir/hub.d/$(printf '%s' "$repo/$path@$revision" | tr -c 'A-Za-z0-9._-' '_').conf"
  {
    for rev in "${revisions[@]}"; do
      echo "location = /$repo/resolve/$rev/$path {"
      if [ -n "$private" ]; then
        echo "    if (\$http_authorization != \"Bearer $TOKEN\") {"
        echo "        add_header X-Error-Code RepoNotFound always;"
        echo "        add_header X-Error-Message \"Invalid credentials in Authorization header\" always;"
        echo "        return 401;"
        echo "    }"
      fi
      echo "    add_header X-Repo-Commit $commit always;"
      if [ -n "$git" ]; then
        echo "    etag off;"
        echo "    add_header ETag '\"$oid\"' always;"
        echo "    alias $dir/cdn/$sha;"
      else
        echo "    add_header X-Linked-Etag '\"$sha\"' always;"
        echo "    add_header X-Linked-Size $size always;"
        # shellcheck disable=SC2153 # CDN_PORT comes from origin.env
        echo "    return 302 http://127.0.0.2:$CDN_PORT/$cdn_path$sha?X-Amz-Expires=3600&X-Amz-Signature=e2eSig$RANDOM;"
      fi
      echo "}"
    done
  } >"$conf"
  # The repo's files at this revision, for `api`: one line per path (a new add replaces it).
  mkdir -p "$dir/repos"
  files="$dir/repos/$(printf '%s' "$repo@$revision" | tr -c 'A-Za-z0-9._-' '_').tsv"
  touch "$files"
  awk -F'\t' -v p="$path" '$2 != p' "$files" >"$files.new"
  storage=lfs visibility=public
  [ -z "$git" ] || storage=git
  [ -z "$private" ] || visibility=private
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$commit" "$path" "$sha" "$size" "$oid" "$storage" "$visibility" >>"$files.new"
  mv "$files.new" "$files"
  echo "$sha $size $commit${git:+ $oid}"
  ;;

api)
  [ $# -ge 1 ] || die "usage: origin.sh api DIR ORG/NAME [REV]"
  repo="$1" revision="${2:-main}"
  files="$dir/repos/$(printf '%s' "$repo@$revision" | tr -c 'A-Za-z0-9._-' '_').tsv"
  [ -s "$files" ] || die "api: nothing added to $repo at $revision"
  python3 "$here/hub_api.py" "$dir/hubapi" "$repo" "$revision" "$files"
  ;;

start) exec "$nginx" -p "$dir" -c "$dir/nginx.conf" ;;
stop) exec "$nginx" -p "$dir" -c "$dir/nginx.conf" -s quit ;;
run) exec "$nginx" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off; master_process off;' ;;
*) die "unknown command $cmd" ;;
esac
