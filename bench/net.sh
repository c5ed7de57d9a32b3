#!/usr/bin/env bash
# Published-port throughput, same run, same machine: iperf3 host -> container through `-p`
# and container -> host (iperf3 -R), for nook with pasta and with slirp4netns (relayed ports)
# and with --port-driver direct, rootless podman
# `-p` (its default network on 4.x: slirp4netns + rootlessport), and the host's own loopback.
# Every setup is measured once per round, rounds interleaved (so load changes hit all of them
# alike); prints the median Gbit/s over the rounds and the ratio to the loopback median.
#
# Run as root from the repository (the daemons run as the unprivileged user $1, default
# nooktest), after `cargo build --release --bins` (or BIN=target/debug).
# Env: ROUNDS (default 5), SECS per measurement (default 5), BIN, DRIVERS (default
# "pasta slirp4netns"), PODMAN=0 to leave podman out, DIRECT=0 to leave out nook's
# --port-driver direct (measured once, in the first driver's daemon).
# Needs iperf3, busybox-static, jq, bc; podman is optional.
set -euo pipefail
user=${1:-nooktest}
secs=${SECS:-5}
rounds=${ROUNDS:-5}
src=${BIN:-target/release}
base=$(mktemp -d /tmp/nook-netbench-XXXXXX)
chmod 755 "$base"
bin=$base/bin
install -d -m 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "$src/$b" "$bin/$b"; done
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "${lo_pid:-}" ]; then kill "$lo_pid" 2>/dev/null || true; fi
  as_user "$base/podman-run" podman rm -f nook-netbench >/dev/null 2>&1 || true
  as_user "$base/podman-run" podman system reset -f >/dev/null 2>&1 || true
  if [ -f "$base/podman-run/libpod/tmp/pause.pid" ]; then
    kill "$(cat "$base/podman-run/libpod/tmp/pause.pid")" 2>/dev/null || true
  fi
  for run in "$base"/run-*; do
    local st=$run/nook
    [ -f "$st/pause.pid" ] || continue
    # a direct port lives in its container (and shim), which outlives nookd: remove both
    as_user "$run" nook rm -f iperf iperf-direct >/dev/null 2>&1 || true
    # nookd (the pause's parent), then what outlives it by design: the pause and the link
    local pause
    pause=$(cat "$st/pause.pid")
    kill "$(ps -o ppid= -p "$pause" | tr -d ' ')" 2>/dev/null || true
    sleep 0.5
    kill -9 "$pause" 2>/dev/null || true
    if [ -f "$st/netlink.pid" ]; then kill "$(cat "$st/netlink.pid")" 2>/dev/null || true; fi
  done
  rm -rf "$base"
}
trap cleanup EXIT

# an image with busybox and iperf3 (+ its libraries), as a docker-archive
img=$base/img
root=$img/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,usr/bin}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp /usr/bin/iperf3 "$root/usr/bin/iperf3"
for lib in $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
mkdir -p "$img/out"
tar --owner=0 --group=0 --numeric-owner -C "$root" -cf "$img/out/layer.tar" .
diff_id=$(sha256sum "$img/out/layer.tar" | cut -d' ' -f1)
cat >"$img/out/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
cfg=$(sha256sum "$img/out/config.json" | cut -d' ' -f1)
mv "$img/out/config.json" "$img/out/$cfg.json"
mkdir "$img/out/$diff_id"
mv "$img/out/layer.tar" "$img/out/$diff_id/"
printf '[{"Config":"%s.json","RepoTags":["localhost/iperf:latest"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$diff_id" >"$img/out/manifest.json"
tar -C "$img/out" -cf "$base/iperf.tar" .
chmod 644 "$base/iperf.tar"

# as_user RUNTIME_DIR CMD...: every setup gets its own runtime dir, home and XDG dirs
as_user() {
  local h=$1.home
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="$h" USER="$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" XDG_RUNTIME_DIR="$1" \
    XDG_CONFIG_HOME="$h/.config" XDG_DATA_HOME="$h/.local/share" "${@:2}"
}
mkrun() { install -d -m 700 -o "$user" -g "$user" "$1" "$1.home"; }
gbps() { jq -r '.end.sum_received.bits_per_second / 1e7 | round / 100'; }
# client PORT [-R]: one measurement, retried once (a server may still be starting)
client() {
  local out
  out=$(iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -J "${@:2}" 2>/dev/null | gbps) ||
    { sleep 1; out=$(iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -J "${@:2}" | gbps); }
  echo "$out"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# --- the setups --------------------------------------------------------------------------
setups=(loopback)
iperf3 -s -p 15201 >/dev/null 2>&1 &
lo_pid=$!
declare -A port=([loopback]=15201)

start_nook() {
  local driver=$1 p=$2 run=$base/run-$1
  mkrun "$run"
  install -d -m 700 -o "$user" -g "$user" "$run.home/.config/nook"
  printf '[network]\ndriver = "%s"\n' "$driver" >"$run.home/.config/nook/config.toml"
  chown "$user:" "$run.home/.config/nook/config.toml"
  as_user "$run" nookd --config "$run.home/.config/nook/config.toml" >"$base/nookd-$driver.log" 2>&1 &
  until as_user "$run" nook version >/dev/null 2>&1; do sleep 0.05; done
  as_user "$run" nook load -i "$base/iperf.tar" >/dev/null
  as_user "$run" nook run -d --name iperf -p "127.0.0.1:$p:5201" localhost/iperf iperf3 -s -p 5201 >/dev/null
  setups+=("nook-$driver")
  port[nook-$driver]=$p
  # --port-driver direct: no relay, the link driver plays no part, so once
  if [ "${DIRECT:-1}" = 1 ] && [ -z "${port[nook-direct]:-}" ]; then
    as_user "$run" nook run -d --name iperf-direct --port-driver direct \
      -p "127.0.0.1:$((p + 50)):5201" localhost/iperf iperf3 -s -p 5201 >/dev/null
    setups+=(nook-direct)
    port[nook-direct]=$((p + 50))
  fi
}
n=0
for d in ${DRIVERS:-pasta slirp4netns}; do
  start_nook "$d" $((18301 + n))
  n=$((n + 1))
done

if [ "${PODMAN:-1}" = 1 ] && command -v podman >/dev/null; then
  prun=$base/podman-run
  mkrun "$prun"
  # Debian's podman defaults to crun, which refuses hybrid cgroup hosts: use runc (DESIGN.md)
  mkdir -p "$prun.home/.config/containers"
  printf '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
    >"$prun.home/.config/containers/containers.conf"
  printf '[storage]\ndriver = "overlay"\n' >"$prun.home/.config/containers/storage.conf"
  chown -R "$user:" "$prun.home"
  if as_user "$prun" podman load -i "$base/iperf.tar" >"$base/podman.log" 2>&1 &&
    as_user "$prun" podman run -d --name nook-netbench -p 127.0.0.1:18399:5201 \
      localhost/iperf:latest iperf3 -s -p 5201 >>"$base/podman.log" 2>&1; then
    podnet=$(as_user "$prun" podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null || echo '?')
    pgrep -u "$user" -x rootlessport >/dev/null && podnet="$podnet, slirp4netns + rootlessport"
    setups+=(podman)
    port[podman]=18399
  else
    echo "podman: could not run the image, skipped:" >&2
    tail -3 "$base/podman.log" >&2
  fi
fi
sleep 1

# --- measure, rounds interleaved ----------------------------------------------------------
declare -A res
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds of ${secs}s per measurement"
for r in $(seq "$rounds"); do
  for s in "${setups[@]}"; do
    res[$s-up]+="$(client "${port[$s]}") "
    [ "$s" = loopback ] || res[$s-down]+="$(client "${port[$s]}" -R) "
  done
  echo "round $r: load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

lo=$(echo "${res[loopback-up]}" | tr ' ' '\n' | grep . | median)
printf '%-36s %6.2f Gbit/s  (runs: %s)\n' "host loopback" "$lo" "${res[loopback-up]}"
for s in "${setups[@]}"; do
  [ "$s" = loopback ] && continue
  for d in up down; do
    v=$(echo "${res[$s-$d]}" | tr ' ' '\n' | grep . | median)
    what="host -> container"
    [ $d = down ] && what="container -> host"
    printf '%-36s %6.2f Gbit/s  %.2fx loopback  (runs: %s)\n' "$s -p, $what" "$v" \
      "$(echo "$v / $lo" | bc -l)" "${res[$s-$d]}"
  done
done
[ -n "${podnet:-}" ] && echo "podman network: $podnet"
exit 0
