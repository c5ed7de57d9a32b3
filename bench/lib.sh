# shellcheck shell=bash
# What the bench scripts share; sourced, not run.

# busybox_archive DIR OUT APPLET...: writes to OUT a docker-archive of a one-layer busybox
# image tagged localhost/bench:latest (the host's static busybox, the APPLETs as links to it,
# root in /etc/passwd and /etc/group, Cmd sh), building it under DIR.
busybox_archive() {
  local img=$1 out=$2 a diff_id cfg_hex
  shift 2
  mkdir -p "$img/rootfs/bin" "$img/rootfs/etc" "$img/rootfs/tmp"
  cp /bin/busybox "$img/rootfs/bin/busybox"
  for a in "$@"; do ln -s busybox "$img/rootfs/bin/$a"; done
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
  jq -n --arg c "$cfg_hex.json" \
    '[{Config:$c,RepoTags:["localhost/bench:latest"],Layers:["layer/layer.tar"]}]' \
    >"$img/archive/manifest.json"
  tar -C "$img/archive" -cf "$out" .
}

# median_of FILE: the median of the numbers in FILE, one per line.
median_of() {
  sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
