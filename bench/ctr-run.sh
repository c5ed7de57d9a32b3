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
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
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
busybox_archive "$work/pub/img" "$work/pub/bench.tar" sh true
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
c=$(median_of "$work/ctr.txt")
n=$(median_of "$work/nook.txt")
printf 'median ctr run --rm IMG ID true:  %6.1f ms\n' "$(echo "$c/1000" | bc -l)"
printf 'median nook run --rm IMG true:    %6.1f ms\n' "$(echo "$n/1000" | bc -l)"
printf 'ratio ctr/nook: %.2f  (%s runs each, binaries from %s)\n' "$(echo "$c/$n" | bc -l)" "$runs" "$bindir"
