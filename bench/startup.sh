#!/usr/bin/env bash
# nookd start-up: time from exec to a socket that answers `nook version`, and idle RSS.
# Run as root (it runs the daemon as the unprivileged user given as $1, default nooktest),
# after `cargo build --release`. Prints medians over N runs (default 10).
set -euo pipefail
user=${1:-nooktest}
runs=${2:-10}
bin=$(mktemp -d /tmp/nook-bench-XXXXXX)
chmod 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "target/release/$b" "$bin/$b"; done
base=$(mktemp -d /tmp/nook-bench-run-XXXXXX)
chmod 755 "$base"
install -d -m 700 -o "$user" -g "$user" "$base/run" "$base/root"
as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="/home/$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    XDG_RUNTIME_DIR="$base/run" "$@"
}
times=()
for _ in $(seq "$runs"); do
  t0=$(date +%s%N)
  as_user nookd --root "$base/root" >"$base/log" 2>&1 &
  until as_user nook version >/dev/null 2>&1; do sleep 0.002; done
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
  pid=$(cat "$base/root/nookd.lock")  # nookd writes its pid into its lock
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sleep 0.3
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
echo "nookd start to ready (creating the namespaces and the network link each time; the first run also probes overlayfs): median ${median} us over $runs runs, first ${times[0]} us"
echo "nookd idle RSS (last run): ${rss} kB"
[ -n "${KEEP:-}" ] || rm -rf "$bin" "$base"
