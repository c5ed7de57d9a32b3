#!/usr/bin/env bash
# Kubernetes' door against nook's own, same daemon, same image, same run:
#   crictl: `runp POD` + `create POD CTR` + `start` (a pod of one container running `true`),
#           then `rmp -f POD` (stop and remove both), over nook's CRI
#   nook:   `nook -n k8s.io run --rm IMG true` over nook's own API
# The pod costs more (its holder process, its network namespace and address): the ratio says
# how much. Rounds alternate the two (load changes hit both); prints the medians and the ratio.
#
# Run as root from the repository (everything runs as the unprivileged user $1, default
# nooktest), after `cargo build --release --bins` (or BIN=target/debug for a debug build).
# Env: RUNS (default 20), BIN, CRICTL (default /var/tmp/go/bin/crictl, which .ci/run installs).
# Needs: busybox-static, jq, bc.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
user=${1:-nooktest}
runs=${RUNS:-20}
bindir=${BIN:-target/release}
crictl=${CRICTL:-/var/tmp/go/bin/crictl}
[ -x "$crictl" ] || { echo "no crictl at $crictl: GOBIN=/var/tmp/go/bin go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0" >&2; exit 1; }

work=$(mktemp -d /tmp/nook-bench-cri-XXXXXX)
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
install -m 755 "$crictl" "$bin/crictl"
install -m 644 /dev/null "$bin/crictl.yaml"
install -d -m 700 -o "$user" -g "$user" "$work/run" "$work/root" "$work/home"
install -d -m 755 -o "$user" -g "$user" "$work/pub" "$work/pub/logs"

as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="$work/home" USER="$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    XDG_RUNTIME_DIR="$work/run" XDG_CONFIG_HOME="$work/home/.config" \
    XDG_DATA_HOME="$work/home/.local/share" "$@"
}

# --- the image: a docker-archive of a busybox rootfs --------------------------------------
busybox_archive "$work/pub/img" "$work/pub/bench.tar" sh true
chown -R "$user:$user" "$work/pub"

# --- nookd, the image in k8s.io, the CRI configs, one warm run of each ----------------------
as_user nookd --root "$work/root" >"$work/nookd.log" 2>&1 &
until as_user nook version >/dev/null 2>&1; do sleep 0.05; done
nookd_pid=$(pgrep -u "$user" -x nookd -n)
as_user nook namespaces create k8s.io >/dev/null 2>&1 || true
as_user nook -n k8s.io load -i "$work/pub/bench.tar" >/dev/null
sock="unix://$work/run/nook/nook.sock"
cri() { as_user crictl --config "$bin/crictl.yaml" --runtime-endpoint "$sock" --image-endpoint "$sock" --timeout 30s "$@"; }
pod_json() {
  jq -n --arg n "$1" --arg logs "$work/pub/logs" \
    '{metadata:{name:$n,namespace:"bench",uid:$n,attempt:0},log_directory:$logs}' >"$work/pub/$1.json"
}
jq -n '{metadata:{name:"c"},image:{image:"localhost/bench:latest"},command:["true"],log_path:"c.log"}' \
  >"$work/pub/c.json"
chown -R "$user:$user" "$work/pub"
pod_round() {
  pod_json "$1"
  p=$(cri runp "$work/pub/$1.json")
  c=$(cri create "$p" "$work/pub/c.json" "$work/pub/$1.json")
  cri start "$c" >/dev/null
  cri rmp -f "$p" >/dev/null
}
pod_round warm
as_user nook -n k8s.io run --rm localhost/bench:latest true

# --- measure: alternating rounds ------------------------------------------------------------
now() { date +%s%N; }
: >"$work/cri.txt"
: >"$work/nook.txt"
for i in $(seq "$runs"); do
  t0=$(now)
  pod_round "b$i"
  t1=$(now)
  as_user nook -n k8s.io run --rm localhost/bench:latest true
  t2=$(now)
  echo $(((t1 - t0) / 1000)) >>"$work/cri.txt"
  echo $(((t2 - t1) / 1000)) >>"$work/nook.txt"
done
c=$(median_of "$work/cri.txt")
n=$(median_of "$work/nook.txt")
printf 'median crictl runp+create+start+rmp: %6.1f ms\n' "$(echo "$c/1000" | bc -l)"
printf 'median nook run --rm IMG true:       %6.1f ms\n' "$(echo "$n/1000" | bc -l)"
printf 'ratio cri/nook: %.2f  (%s runs each, binaries from %s)\n' "$(echo "$c/$n" | bc -l)" "$runs" "$bindir"
