#!/usr/bin/env bash
# Writes a docker-archive (`docker save` format) of a busybox image built from the host's
# static busybox (Debian: busybox-static) to stdout, tagged docker.io/library/busybox:latest,
# so nook can be tried without a registry:  scripts/busybox-image.sh | nook load
set -euo pipefail
bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || { echo "busybox-image.sh: $bb not found: install busybox-static (or set BUSYBOX)" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
  echo "busybox-image.sh: $bb is dynamically linked; install busybox-static" >&2; exit 1
fi
tag=${1:-docker.io/library/busybox:latest}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,var/www,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$root/etc/group"
out=$work/out
mkdir -p "$out"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$out/layer.tar" .
diff_id=$(sha256sum "$out/layer.tar" | cut -d' ' -f1)
arch=$(uname -m); case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
cat >"$out/config.json" <<JSON
{"architecture":"$arch","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/busybox-image.sh"}]}
JSON
cfg=$(sha256sum "$out/config.json" | cut -d' ' -f1)
mv "$out/config.json" "$out/$cfg.json"
mkdir -p "$out/$diff_id"
mv "$out/layer.tar" "$out/$diff_id/layer.tar"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$tag" "$diff_id" >"$out/manifest.json"
tar -C "$out" -cf - .
