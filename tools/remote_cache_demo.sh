#!/usr/bin/env bash
# The zoo through a real HTTP remote cache: starts nginx (WebDAV) on 127.0.0.1:<free port>,
# cleans, builds the targets with --remote_cache, runs `bazel clean`, rebuilds (every action should
# now be a remote cache hit, no export runs), stops nginx and prints the hit count.
#
#   tools/remote_cache_demo.sh [TARGET...]        (default: //models:ci_zoo)
#
# `bazel clean` deletes this workspace's outputs: run it in a fresh clone
# (clone=$(mktemp -d) && git clone <repo> "$clone" && "$clone"/tools/remote_cache_demo.sh).
# It refuses to run where bazel-bin already exists unless EO_DEMO_CLEAN_OK=1.
# Needs nginx-light (Debian): installed with apt-get when missing (root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("${@:-//models:ci_zoo}")

if [ -e bazel-bin ] && [ "${EO_DEMO_CLEAN_OK:-0}" != 1 ]; then
  echo "error: $(pwd) has build outputs that 'bazel clean' would delete; run in a fresh clone" \
    "or set EO_DEMO_CLEAN_OK=1" >&2
  exit 2
fi

nginx_bin=$(command -v nginx || true)
[ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
if [ -z "$nginx_bin" ]; then
  echo "== installing nginx-light (Debian package)"
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null \
    || { "${sudo_cmd[@]}" apt-get update -q >/dev/null &&
      "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null; }
  nginx_bin=/usr/sbin/nginx
fi

work=$(mktemp -d -t eo_remote_cache.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/cache" "$work/nginx_temp" "$work/logs"
# nginx's workers run as `nobody`: the cache must be writable by them, or every PUT is a 500.
if [ "$(id -u)" -eq 0 ]; then chown nobody "$work/cache" "$work/nginx_temp"; else chmod 777 "$work/cache" "$work/nginx_temp"; fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
$([ "$(id -u)" -eq 0 ] && echo "user nobody nogroup;")
events { worker_connections 256; }
http {
  access_log $work/logs/access.log;
  client_body_temp_path $work/nginx_temp/body;
  proxy_temp_path $work/nginx_temp/proxy;
  fastcgi_temp_path $work/nginx_temp/fastcgi;
  uwsgi_temp_path $work/nginx_temp/uwsgi;
  scgi_temp_path $work/nginx_temp/scgi;
  server {
    listen 127.0.0.1:$port;
    root $work/cache;
    location / {
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      client_max_body_size 0;
    }
  }
}
CONF

"$nginx_bin" -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" &
nginx_pid=$!
trap 'kill "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "== nginx (pid $nginx_pid) serves $work/cache on http://127.0.0.1:$port"

flags=(--remote_cache="http://127.0.0.1:$port" --disk_cache=)
run() {
  local log=$1; shift
  local start=$SECONDS
  ./bazelw build "${flags[@]}" "$@" 2>&1 | tee "$log" | grep -E '^(INFO: [0-9]+ processes|ERROR|FAILED)' || true
  echo "   ($((SECONDS - start)) s)"
  grep -q 'Build completed successfully' "$log"
}

echo "== bazel clean, build 1: executes every action and uploads the results"
./bazelw clean 2>/dev/null
run "$work/build1.log" "${targets[@]}"
echo "== bazel clean"
./bazelw clean 2>/dev/null
echo "== build 2: after clean, from the remote cache"
run "$work/build2.log" "${targets[@]}"

summary=$(grep -E '^INFO: [0-9]+ processes' "$work/build2.log" | tail -1)
hits=$(sed -nE 's/.* ([0-9]+) remote cache hit.*/\1/p' <<<"$summary")
executed=$({ grep -oE '[0-9]+ (linux-sandbox|processwrapper-sandbox|sandbox|local|worker|remote)(,|\.|$)' \
  <<<"$summary" || true; } | awk '{n += $1} END {print n + 0}')
stored=$(find "$work/cache" -type f | wc -l)
echo "== cache holds $stored entries ($(du -sh "$work/cache" | cut -f1))"
echo "remote cache hits: ${hits:-0}; actions executed after clean: $executed"
[ "${hits:-0}" -gt 0 ] && [ "$executed" -eq 0 ]
