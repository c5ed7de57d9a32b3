#!/usr/bin/env bash
# containerd's door against nook's own, same daemon, same image, same run:
#   `ctr run --rm IMG ID true`   (Debian's ctr 1.6 over nook's containerd API)
#   `nook run --rm IMG true`     (nook's CLI over nook's API)
# Both run inside nookd's namespaces (through `nook-rootless-setuptool.sh nsenter`, which ctr
# needs: it mounts the rootfs itself and makes its FIFOs), so the entry costs both alike.
# Rounds alternate the two (load changes hit both); prints the medians and the ratio.
#
# Run as root from the repository (everything runs as the unprivileged user $1, default
# nooktest), after `cargo build --release --bins` (or BIN=target/debug for a debug build).
# Env: RUNS (default 20), BIN. Needs: ctr (apt-get install containerd; containerd itself is
# never started), busybox-static, jq, bc.
set -euo pipefail
user=${1:-nooktest}
runs=${RUNS:-20}
bindir=${BIN:-target/release}
command -v ctr >/dev/null || { echo "ctr is missing: apt-get install containerd" >&2; exit 1; }

work=$(mktemp -d /tmp/nook-bench-ctr-XXXXXX)
chmod 755 "$work"
cleanup() {
  if [ -n "${nookd_pid:-}" ]; then kill "$nookd_pid" 2>/dev/null || true; fi
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT
bin="$work/bin"
install -d -m 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "$bindir/$b" "$bin/$b"; done
install -m 755 setuptool/nook-rootless-setuptool.sh "$bin/"
install -d -m 700 -o "$user" -g "$user" "$work/run" "$work/root" "$work/home"
install -d -m 755 -o "$user" -g "$user" "$work/pub"

as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="$work/home" USER="$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    XDG_RUNTIME_DIR="$work/run" XDG_CONFIG_HOME="$work/home/.config" \
    XDG_DATA_HOME="$work/home/.local/share" "$@"
}

# --- the image: a docker-archive of a busybox rootfs --------------------------------------
img="$work/pub/img"
mkdir -p "$img/rootfs/bin" "$img/rootfs/etc" "$img/rootfs/tmp"
cp /bin/busybox "$img/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$img/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$img/rootfs/etc/passwd"
echo 'root:x:0:' >"$img/rootfs/etc/group"
tar -C "$img/rootfs" --numeric-owner --owner=0 --group=0 -cf "$img/layer.tar" .
diff_id="sha256:$(sha256sum "$img/layer.tar" | cut -d' ' -f1)"
mkdir -p "$img/archive/layer"
mv "$img/layer.tar" "$img/archive/layer/layer.tar"
jq -n --arg d "$diff_id" '{architecture:"amd64",os:"linux",
  config:{Cmd:["sh"],Env:["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
  rootfs:{type:"layers",diff_ids:[$d]}}' >"$img/config.json"
cfg_hex=$(sha256sum "$img/config.json" | cut -d' ' -f1)
mv "$img/config.json" "$img/archive/$cfg_hex.json"
jq -n --arg c "$cfg_hex.json" '[{Config:$c,RepoTags:["localhost/bench:latest"],Layers:["layer/layer.tar"]}]' \
  >"$img/archive/manifest.json"
tar -C "$img/archive" -cf "$work/pub/bench.tar" .
chown -R "$user:$user" "$work/pub"

# --- nookd, the image, one warm run of each ------------------------------------------------
as_user nookd --root "$work/root" >"$work/nookd.log" 2>&1 &
until as_user nook version >/dev/null 2>&1; do sleep 0.05; done
nookd_pid=$(pgrep -u "$user" -x nookd -n)
as_user nook load -i "$work/pub/bench.tar" >/dev/null
image=$(as_user ctr --address "$work/run/nook/nook.sock" images ls -q | head -n1)
ns() { as_user nook-rootless-setuptool.sh nsenter -- "$@"; }
ns nook run --rm "$image" true
ns ctr run --rm "$image" warm true

# --- measure: alternating rounds ------------------------------------------------------------
now() { date +%s%N; }
: >"$work/ctr.txt"
: >"$work/nook.txt"
for i in $(seq "$runs"); do
  t0=$(now)
  ns ctr run --rm "$image" "b$i" true
  t1=$(now)
  ns nook run --rm "$image" true
  t2=$(now)
  echo $(((t1 - t0) / 1000)) >>"$work/ctr.txt"
  echo $(((t2 - t1) / 1000)) >>"$work/nook.txt"
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
c=$(median "$work/ctr.txt")
n=$(median "$work/nook.txt")
printf 'median ctr run --rm IMG ID true:  %6.1f ms\n' "$(echo "$c/1000" | bc -l)"
printf 'median nook run --rm IMG true:    %6.1f ms\n' "$(echo "$n/1000" | bc -l)"
printf 'ratio ctr/nook: %.2f  (%s runs each, binaries from %s)\n' "$(echo "$c/$n" | bc -l)" "$runs" "$bindir"
