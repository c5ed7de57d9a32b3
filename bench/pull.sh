#!/usr/bin/env bash
# Pull benchmark: `nook pull` of a ~100 MB multi-layer image from a loopback docker-registry,
# against `skopeo copy docker://… oci:DIR` of the same image in the same run.
#
# Run as root (nookd and skopeo run as the unprivileged user $1, default nooktest). Binaries come
# from $NOOK_BIN (default target/release, else target/debug; with a target directory shared
# by several checkouts, copy your own build somewhere and point NOOK_BIN at it). Runs each side $2 times (default 5)
# with an empty store each time and prints the medians, throughput and the ratio.
set -euo pipefail
user=${1:-nooktest}
runs=${2:-5}
layers=${LAYERS:-4}       # random-data layers on top of a busybox layer
layer_mb=${LAYER_MB:-25}  # MB of incompressible data each

src=${NOOK_BIN:-}
if [ -z "$src" ]; then
  if [ -x target/release/nook ]; then src=target/release; else src=target/debug; fi
fi
work=$(mktemp -d /tmp/nook-bench-pull-XXXXXX)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
bin="$work/bin"
install -d -m 755 "$bin"
for b in nookd nook nook-shim; do install -m 755 "$src/$b" "$bin/$b"; done

# --- the registry -------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/reg"
cat >"$work/reg/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/reg/data
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/reg/config.yml" >"$work/reg/log" 2>&1 &
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.05; done

# --- the image: an OCI layout built with tar/gzip/sha256sum -----------------------------
lay="$work/layout"
mkdir -p "$lay/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"
blob() { # file -> prints "digest size", moves it into the layout
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1)
  s=$(stat -c %s "$1")
  mv "$1" "$lay/blobs/sha256/$d"
  echo "sha256:$d $s"
}
diff_ids=() ; layer_descs=()
for i in $(seq 0 "$layers"); do
  r="$work/l$i"; mkdir -p "$r"
  if [ "$i" = 0 ]; then
    mkdir -p "$r/bin"; cp /bin/busybox "$r/bin/busybox"; ln -s busybox "$r/bin/sh"
  else
    head -c "${layer_mb}M" /dev/urandom >"$r/data$i.bin"
  fi
  tar --sort=name --mtime=@0 --owner=0 --group=0 -C "$r" -cf "$work/l$i.tar" .
  diff_ids+=("\"sha256:$(sha256sum "$work/l$i.tar" | cut -d' ' -f1)\"")
  gzip -n -1 "$work/l$i.tar"
  read -r d s < <(blob "$work/l$i.tar.gz")
  layer_descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$d\",\"size\":$s}")
  rm -rf "$r"
done
join() { local IFS=,; echo "$*"; }
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$(join "${diff_ids[@]}")" >"$work/config.json"
read -r cd cs < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
  "$cd" "$cs" "$(join "${layer_descs[@]}")" >"$work/manifest.json"
read -r md ms < <(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
  "$md" "$ms" >"$lay/index.json"
image="127.0.0.1:$port/bench/img:1"
skopeo copy --quiet --dest-tls-verify=false "oci:$lay:1" "docker://$image"
total=$(du -cb "$lay"/blobs/sha256/* | tail -1 | cut -f1)
echo "image $image: $((layers + 1)) layers, $((total / 1000000)) MB compressed ($md)"

as_user() {
  setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
    HOME="/home/$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    XDG_RUNTIME_DIR="$work/run" XDG_CONFIG_HOME="$work/cfg" "$@"
}
install -d -m 700 -o "$user" -g "$user" "$work/run" "$work/cfg"
now() { date +%s%N; }
median() { sort -n | sed -n "$(( (runs + 1) / 2 ))p"; }

# --- skopeo ---------------------------------------------------------------------------------
sk=()
for _ in $(seq "$runs"); do
  out="$work/sk"; rm -rf "$out"; install -d -m 755 -o "$user" -g "$user" "$out"
  t0=$(now)
  as_user skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$out/o:1"
  t1=$(now)
  sk+=($(( (t1 - t0) / 1000000 )))
done

# --- nook (fetch only, and fetch + unpack into the default snapshotter) --------------------
printf '[images]\nunpack = false\n' >"$work/fetch.toml"
printf '[images]\nunpack = true\n' >"$work/unpack.toml"
chmod 644 "$work"/*.toml
nook_runs() { # config -> prints the times (ms)
  for i in $(seq "$runs"); do
    root="$work/root$i"; install -d -m 700 -o "$user" -g "$user" "$root"
    (exec setpriv --reuid="$user" --regid="$user" --init-groups --reset-env env \
      HOME="/home/$user" PATH="$bin:/usr/bin:/bin:/usr/sbin:/sbin" \
      XDG_RUNTIME_DIR="$work/run" XDG_CONFIG_HOME="$work/cfg" \
      nookd --config "$1" --root "$root") >"$work/nookd.log" 2>&1 &
    pid=$!  # the subshell, setpriv and env exec: this is nookd itself
    until as_user nook version >/dev/null 2>&1; do sleep 0.01; done
    t0=$(now)
    as_user nook pull -q "$image" >/dev/null
    t1=$(now)
    echo $(( (t1 - t0) / 1000000 ))
    kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -rf "$root"
  done
}
mapfile -t nk < <(nook_runs "$work/fetch.toml")
mapfile -t nu < <(nook_runs "$work/unpack.toml")

skm=$(printf '%s\n' "${sk[@]}" | median)
nkm=$(printf '%s\n' "${nk[@]}" | median)
num=$(printf '%s\n' "${nu[@]}" | median)
echo "binaries: $src"
echo "skopeo copy docker:// -> oci:  median ${skm} ms  ($(( total / 1000 / skm )) MB/s)  runs: ${sk[*]}"
echo "nook pull (fetch only):        median ${nkm} ms  ($(( total / 1000 / nkm )) MB/s)  runs: ${nk[*]}"
echo "nook pull + unpack:            median ${num} ms  ($(( total / 1000 / num )) MB/s)  runs: ${nu[*]}"
python3 -c "print(f'ratio nook fetch / skopeo: {$nkm/$skm:.2f}')"
