#!/usr/bin/env bash
# Published-port throughput, same run, same machine: iperf3 host -> container through `-p`
# and container -> host (iperf3 -R), for nook with pasta and with slirp4netns, rootless podman
# `-p` (if podman works for the user), and the host's own loopback. Prints Gbit/s and ratios.
# Run as root (the daemons run as the unprivileged user $1, default nooktest), after
# `cargo build --release` (or BIN=target/debug). Needs iperf3 and busybox-static.
set -euo pipefail
user=${1:-nooktest}
secs=${SECS:-5}
src=${BIN:-target/release}
bin=$(mktemp -d /tmp/nook-netbench-XXXXXX); chmod 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "$src/$b" "$bin/$b"; done
base=$(mktemp -d /tmp/nook-netbench-run-XXXXXX); chmod 755 "$base"
trap 'rm -rf "$bin" "$base"' EXIT

# an image with busybox and iperf3 (+ its libraries)
img=$base/img; root=$img/rootfs; mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,usr/bin}
cp /bin/busybox "$root/bin/busybox"; ln -s busybox "$root/bin/sh"
cp /usr/bin/iperf3 "$root/usr/bin/iperf3"
for lib in $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"; echo 'root:x:0:' >"$root/etc/group"
mkdir -p "$img/out"
tar --owner=0 --group=0 --numeric-owner -C "$root" -cf "$img/out/layer.tar" .
diff_id=$(sha256sum "$img/out/layer.tar" | cut -d' ' -f1)
cat >"$img/out/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
cfg=$(sha256sum "$img/out/config.json" | cut -d' ' -f1)
mv "$img/out/config.json" "$img/out/$cfg.json"; mkdir "$img/out/$diff_id"; mv "$img/out/layer.tar" "$img/out/$diff_id/"
printf '[{"Config":"%s.json","RepoTags":["localhost/iperf:latest"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$diff_id" >"$img/out/manifest.json"
tar -C "$img/out" -cf "$base/iperf.tar" .; chmod 644 "$base/iperf.tar"

as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="/home/$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" XDG_RUNTIME_DIR="$1" "${@:2}"
}
gbps() { jq -r '.end.sum_received.bits_per_second / 1e9' ; }
client() { iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -J "${@:2}" | gbps; }

iperf3 -s -p 15201 -D; sleep 0.5
lo=$(client 15201); pkill -f 'iperf3 -s -p 15201' || true
printf '%-40s %8.2f Gbit/s\n' "host loopback" "$lo"

run_nook() {
  local driver=$1 port=$2
  local run=$base/run-$driver dir=$base/$driver
  install -d -m 700 -o "$user" -g "$user" "$run" "$dir" "$dir/root" "$dir/cfg"
  printf '[network]\ndriver = "%s"\n' "$driver" >"$dir/cfg/config.toml"; chown -R "$user:" "$dir"
  as_user "$run" nookd --root "$dir/root" --config "$dir/cfg/config.toml" >"$dir/log" 2>&1 &
  local pid=$!
  until as_user "$run" nook version >/dev/null 2>&1; do sleep 0.05; done
  as_user "$run" nook load <"$base/iperf.tar" >/dev/null
  as_user "$run" nook run -d --name iperf -p "127.0.0.1:$port:5201" localhost/iperf iperf3 -s -p 5201 >/dev/null
  sleep 1
  local up down
  up=$(client "$port"); down=$(client "$port" -R)
  printf '%-40s %8.2f Gbit/s  (%.2fx loopback)\n' "nook $driver -p, host -> container" "$up" "$(echo "$up / $lo" | bc -l)"
  printf '%-40s %8.2f Gbit/s  (%.2fx loopback)\n' "nook $driver -p, container -> host" "$down" "$(echo "$down / $lo" | bc -l)"
  as_user "$run" nook rm -f iperf >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_nook pasta 18301
run_nook slirp4netns 18302

if as_user "/run/user/$(id -u "$user")" podman --version >/dev/null 2>&1; then
  prun=/run/user/$(id -u "$user"); install -d -m 700 -o "$user" -g "$user" "$prun"
  if as_user "$prun" podman load -i "$base/iperf.tar" >/dev/null 2>&1 &&
     as_user "$prun" podman run -d --name nook-netbench -p 127.0.0.1:18303:5201 localhost/iperf:latest iperf3 -s -p 5201 >/dev/null 2>&1; then
    sleep 1
    up=$(client 18303); down=$(client 18303 -R)
    printf '%-40s %8.2f Gbit/s  (%.2fx loopback)\n' "podman -p, host -> container" "$up" "$(echo "$up / $lo" | bc -l)"
    printf '%-40s %8.2f Gbit/s  (%.2fx loopback)\n' "podman -p, container -> host" "$down" "$(echo "$down / $lo" | bc -l)"
    as_user "$prun" podman rm -f nook-netbench >/dev/null 2>&1 || true
  else
    echo "podman: could not run the image (see DESIGN.md for its setup); skipped"
  fi
fi
