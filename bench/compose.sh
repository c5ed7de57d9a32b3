#!/usr/bin/env bash
# Compose up/down times of a three-service project (web with a published port and an alias,
# an app reaching it by name and alias, a db with a named volume; depends_on,
# environment, restart policies), side by side:
#   1. through nook's Docker API (nookd's docker.sock),
#   2. through rootless podman's Docker-compatible API (`podman system service`, Debian's 4.3),
# each with docker-compose 1.29 (Debian's package) and compose v2 (the plugin .ci/run builds
# into /var/tmp/go/bin), when installed. `up -d` and `down -v` are timed RUNS times each
# (default 5); medians and the nook/podman ratio are printed.
#
# Run as root from the repository (everything runs as the unprivileged user $1, default
# nooktest), after `cargo build --release` (or BIN=target/debug). Needs: podman, jq,
# busybox-static, the docker CLI (for compose v2 as a plugin).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
user=${1:-nooktest}
runs=${RUNS:-5}
bindir=${BIN:-target/release}
v2=/var/tmp/go/bin/docker-compose
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

work=$(mktemp -d /tmp/nook-bench-compose-XXXXXX)
chmod 755 "$work"
cleanup() {
  for p in "${nookd_pid:-}" "${podman_pid:-}"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  done
  sleep 0.5
  as_user podman unshare rm -rf "$work/home/.local/share/containers" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bin="$work/bin"
install -d -m 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "$bindir/$b" "$bin/$b"; done
install -d -m 700 -o "$user" -g "$user" "$work/run" "$work/root" "$work/home"
install -d -m 755 -o "$user" -g "$user" "$work/pub" "$work/home/docker" "$work/home/docker/cli-plugins"
[ -x "$v2" ] && ln -s "$v2" "$work/home/docker/cli-plugins/docker-compose"

as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="$work/home" USER="$user" PATH="$bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    XDG_RUNTIME_DIR="$work/run" XDG_CONFIG_HOME="$work/home/.config" \
    XDG_DATA_HOME="$work/home/.local/share" DOCKER_CONFIG="$work/home/docker" \
    COMPOSE_PROJECT_NAME=bench WEB_PORT="$port" "$@"
}

# --- the image: a docker-archive of a busybox rootfs ----------------------------------------
busybox_archive "$work/pub/img" "$work/pub/bench.tar" sh true ls cat echo sleep

# --- the project ------------------------------------------------------------------------------
proj="$work/pub/project"
mkdir -p "$proj"
cat >"$proj/compose.yaml" <<'EOF'
version: "3.8"
services:
  web:
    image: localhost/bench:latest
    command: ["sh", "-c", "busybox mkdir -p /www && echo hello > /www/index.html && trap 'exit 0' TERM; busybox httpd -f -p 80 -h /www & wait"]
    ports:
      - "127.0.0.1:${WEB_PORT}:80"
    networks:
      default:
        aliases: [frontend]
    restart: unless-stopped
  db:
    image: localhost/bench:latest
    environment:
      DB_NAME: appdb
    command: ["sh", "-c", "echo $$DB_NAME > /data/name; trap 'exit 0' TERM; busybox sleep 3600 & wait"]
    volumes:
      - dbdata:/data
    restart: always
  app:
    image: localhost/bench:latest
    depends_on: [web, db]
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do busybox wget -q -O - http://web/index.html; busybox wget -q -O - http://frontend/index.html; busybox sleep 1 & wait; done"]
    restart: on-failure
volumes:
  dbdata:
EOF
chown -R "$user:$user" "$work/pub" "$work/home"

# --- the engines --------------------------------------------------------------------------------
as_user nookd --root "$work/root" >"$work/nookd.log" 2>&1 &
until as_user nook version >/dev/null 2>&1; do sleep 0.05; done
nookd_pid=$(pgrep -u "$user" -x nookd -n)
as_user nook load -i "$work/pub/bench.tar" >/dev/null
nook_host="unix://$work/run/nook/docker.sock"

podman_host=""
if command -v podman >/dev/null; then
  mkdir -p "$work/home/.config/containers"
  printf '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
    >"$work/home/.config/containers/containers.conf"
  printf '[storage]\ndriver = "overlay"\n' >"$work/home/.config/containers/storage.conf"
  chown -R "$user:$user" "$work/home"
  if as_user podman load -i "$work/pub/bench.tar" >/dev/null 2>&1; then
    as_user podman system service --time=0 "unix://$work/run/podman.sock" >"$work/podman.log" 2>&1 &
    podman_pid=$!
    for _ in $(seq 100); do [ -S "$work/run/podman.sock" ] && break; sleep 0.1; done
    podman_host="unix://$work/run/podman.sock"
  else
    echo "podman: cannot load the image here (skipped)" >&2
  fi
fi

# --- measure --------------------------------------------------------------------------------------
# compose CMD... against DOCKER_HOST $1, in the project directory
compose() {
  local host=$1
  shift
  (cd "$proj" && as_user env DOCKER_HOST="$host" "$@")
}
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

# one flavor against one engine: "up_median down_median", or "failed: why"
bench() {
  local host=$1
  shift
  local ups=() downs=() t
  for _ in $(seq "$runs"); do
    t=$(date +%s%N)
    if ! compose "$host" "$@" up -d >"$work/up.log" 2>&1; then
      echo "failed: $(grep -v '^time=' "$work/up.log" | tail -1)"
      compose "$host" "$@" down -v >/dev/null 2>&1 || true
      return
    fi
    ups+=("$(ms "$t")")
    t=$(date +%s%N)
    if ! compose "$host" "$@" down -v >"$work/down.log" 2>&1; then
      echo "failed: $(tail -1 "$work/down.log")"
      return
    fi
    downs+=("$(ms "$t")")
  done
  echo "$(printf '%s\n' "${ups[@]}" | median) $(printf '%s\n' "${downs[@]}" | median)"
}

flavors=()
command -v docker-compose >/dev/null && flavors+=("docker-compose 1.29|docker-compose")
[ -x "$v2" ] && command -v docker >/dev/null && flavors+=("compose v2 (plugin)|docker compose")
[ ${#flavors[@]} = 0 ] && { echo "no compose installed (apt-get install docker-compose)" >&2; exit 1; }

printf '%-22s %-8s %10s %10s\n' "compose" "engine" "up -d ms" "down -v ms"
for f in "${flavors[@]}"; do
  name=${f%%|*}
  read -r -a cmd <<<"${f#*|}"
  res=$(bench "$nook_host" "${cmd[@]}")
  read -r nu nd <<<"$res"
  if [ "$nu" = "failed:" ]; then
    printf '%-22s %-8s %s\n' "$name" nook "$res"
    continue
  fi
  printf '%-22s %-8s %10s %10s\n' "$name" nook "$nu" "$nd"
  if [ -n "$podman_host" ]; then
    res=$(bench "$podman_host" "${cmd[@]}")
    read -r pu pd <<<"$res"
    if [ "$pu" = "failed:" ]; then
      printf '%-22s %-8s %s\n' "$name" podman "$res"
    else
      printf '%-22s %-8s %10s %10s   nook/podman: up %.2fx, down %.2fx\n' "$name" podman "$pu" "$pd" \
        "$(echo "$nu/$pu" | bc -l)" "$(echo "$nd/$pd" | bc -l)"
    fi
  fi
done
