#!/usr/bin/env bash
# Container start-to-exit latency, side by side, on the same busybox image:
#   1. bare `runc run` of a prepared bundle (the floor: no image, no snapshot, no daemon),
#   2. `nook run --rm IMG true` (with runc, and with crun when it is installed),
#   3. rootless podman `podman run --rm --network=none IMG true` (Debian's podman),
# then 20 `nook run -d` started concurrently and removed, with nookd's RSS while they run and
# each shim's RSS.
#
# Run as root from the repository (it runs everything as the unprivileged user $1, default
# nooktest), after `cargo build --release` (or BIN=target/debug for a debug build).
# Needs: runc, podman, hyperfine, jq, busybox-static. Prints medians and ratios.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
user=${1:-nooktest}
runs=${RUNS:-20}
bindir=${BIN:-target/release}

work=$(mktemp -d /tmp/nook-bench-run-XXXXXX)
chmod 755 "$work"
cleanup() {
  # shellcheck disable=SC2046 # one id per word
  as_user nook rm -f $(as_user nook ps -a -q 2>/dev/null) >"$work/h.log" 2>&1 || true
  if [ -n "${nookd_pid:-}" ]; then kill "$nookd_pid" 2>/dev/null || true; fi
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT
bin="$work/bin"
install -d -m 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "$bindir/$b" "$bin/$b"; done
install -d -m 700 -o "$user" -g "$user" "$work/run" "$work/root" "$work/home"
install -d -m 755 -o "$user" -g "$user" "$work/pub"

as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="$work/home" USER="$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    XDG_RUNTIME_DIR="$work/run" XDG_CONFIG_HOME="$work/home/.config" \
    XDG_DATA_HOME="$work/home/.local/share" "$@"
}

# --- the image: a docker-archive of a busybox rootfs ------------------------------------
img="$work/pub/img"
busybox_archive "$img" "$work/pub/bench.tar" sh true ls cat echo sleep
chown -R "$user:$user" "$work/pub"

# --- 1. the runc floor --------------------------------------------------------------------
bundle="$work/pub/bundle"
mkdir -p "$bundle"
cp -a "$img/rootfs" "$bundle/rootfs"
(cd "$bundle" && runc spec --rootless)
# `runc spec --rootless` maps the caller (root here): map the user instead
jq --argjson u "$(id -u "$user")" --argjson g "$(id -g "$user")" \
  '.process.terminal=false | .process.args=["true"]
   | .linux.uidMappings[0].hostID=$u | .linux.gidMappings[0].hostID=$g' \
  "$bundle/config.json" >"$bundle/c" && mv "$bundle/c" "$bundle/config.json"
chown -R "$user:$user" "$bundle"
install -d -m 700 -o "$user" -g "$user" "$work/runc-root"

# --- nookd --------------------------------------------------------------------------------
as_user nookd --root "$work/root" >"$work/nookd.log" 2>&1 &
until as_user nook version >/dev/null 2>&1; do sleep 0.05; done
nookd_pid=$(pgrep -u "$user" -x nookd -n)
as_user nook load -i "$work/pub/bench.tar" >/dev/null
as_user nook run --rm localhost/bench:latest true # warm: unpacked once

# --- podman ---------------------------------------------------------------------------------
have_podman=0
if command -v podman >/dev/null; then
  mkdir -p "$work/home/.config/containers"
  printf '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
    >"$work/home/.config/containers/containers.conf"
  printf '[storage]\ndriver = "overlay"\n' >"$work/home/.config/containers/storage.conf"
  chown -R "$user:$user" "$work/home"
  if as_user podman load -i "$work/pub/bench.tar" >/dev/null 2>&1 &&
    as_user podman run --rm --network=none localhost/bench:latest true >/dev/null 2>&1; then
    have_podman=1
  else
    echo "podman: not usable here (skipped)" >&2
  fi
fi

# --- measure --------------------------------------------------------------------------------
cmds=(
  "runc --root $work/runc-root run -b $bundle bench"
  "nook run --rm --runtime runc localhost/bench:latest true"
)
names=("runc run (floor)" "nook run --rm --runtime runc")
if as_user nook run --rm --runtime crun localhost/bench:latest true >/dev/null 2>&1; then
  cmds+=("nook run --rm --runtime crun localhost/bench:latest true")
  names+=("nook run --rm --runtime crun")
fi
if [ $have_podman = 1 ]; then
  cmds+=("podman run --rm --network=none localhost/bench:latest true")
  names+=("podman run --rm --network=none")
fi
args=()
for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
chown "$user:$user" "$work"
as_user hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/h.json" "${args[@]}" >"$work/h.log" 2>&1 ||
  { cat "$work/h.log" >&2; exit 1; }
med() { jq -r --arg n "$1" '.results[] | select(.command==$n) | .median' "$work/h.json"; }
floor=$(med "runc run (floor)")
nook=$(med "nook run --rm --runtime runc")
printf 'median runc run (floor):             %6.1f ms\n' "$(echo "$floor*1000" | bc -l)"
printf 'median nook run --rm --runtime runc: %6.1f ms  (%.2fx the floor)\n' "$(echo "$nook*1000" | bc -l)" "$(echo "$nook/$floor" | bc -l)"
crun=$(med "nook run --rm --runtime crun")
if [ -n "$crun" ]; then
  printf 'median nook run --rm --runtime crun: %6.1f ms  (%.2fx the runc floor; the default runtime when installed)\n' "$(echo "$crun*1000" | bc -l)" "$(echo "$crun/$floor" | bc -l)"
  nook=$crun
fi
if [ $have_podman = 1 ]; then
  pod=$(med "podman run --rm --network=none")
  printf 'median podman run --rm --net=none: %6.1f ms  (%.2fx the floor; nook is %.2fx podman)\n' \
    "$(echo "$pod*1000" | bc -l)" "$(echo "$pod/$floor" | bc -l)" "$(echo "$nook/$pod" | bc -l)"
fi

# --- 20 concurrent detached containers --------------------------------------------------------
t0=$(date +%s%N)
pids=()
for i in $(seq 20); do
  as_user nook run -d --name "c$i" localhost/bench:latest sleep 1000 >/dev/null &
  pids+=($!)
done
wait "${pids[@]}"
t1=$(date +%s%N)
running=$(as_user nook ps -q | wc -l)
printf '20 concurrent nook run -d: %d ms (%d running)\n' $(((t1 - t0) / 1000000)) "$running"
printf 'nookd RSS with %d containers: %s kB\n' "$running" "$(awk '/VmRSS/ {print $2}' "/proc/$nookd_pid/status")"
shims=$(pgrep -u "$user" -f "nook-shim $work/" || true)
n=0
tot=0
for p in $shims; do
  r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
  tot=$((tot + r))
  n=$((n + 1))
done
[ $n -gt 0 ] && printf 'shim RSS: %d kB average over %d shims\n' $((tot / n)) "$n"
t0=$(date +%s%N)
# shellcheck disable=SC2046 # one id per word
as_user nook rm -f $(as_user nook ps -a -q) >/dev/null
t1=$(date +%s%N)
printf 'removing them (rm -f, one call): %d ms\n' $(((t1 - t0) / 1000000))
