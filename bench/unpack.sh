#!/bin/bash
# Unpack benchmark: a realistic Debian rootfs (debootstrap --variant=minbase bookworm) as one
# layer and split into three, unpacked by nookd (as the unprivileged test user, into the chosen
# snapshotter) against `tar -xf` of the same uncompressed layers into an empty directory by the
# same user — once as the plain user on the host and once as "root" inside nookd's user
# namespace (where tar, like nook, also restores ownership). Same run, same disk, page cache warm.
#
# Run as root (it prepares the rootfs and switches to the test user):
#   bench/unpack.sh [RUNS]
# Environment:
#   NOOK_BENCH_USER   test user (default nooktest)
#   NOOK_BENCH_CACHE  where the debootstrap rootfs is cached (default /work/cache)
#   NOOK_BIN_DIR      directory with nookd and nook (default $CARGO_TARGET_DIR/release, else debug)
#   SNAPSHOTTER       overlayfs (default), fuse-overlayfs or native
#   MIRROR            Debian mirror for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail

RUNS=${1:-5}
USER_NAME=${NOOK_BENCH_USER:-nooktest}
CACHE=${NOOK_BENCH_CACHE:-/work/cache}
SNAPSHOTTER=${SNAPSHOTTER:-overlayfs}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TARGET=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}

die() { echo "unpack.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it builds the rootfs and switches to $USER_NAME)"
id "$USER_NAME" >/dev/null 2>&1 || die "user $USER_NAME does not exist (useradd -m $USER_NAME)"
command -v hyperfine >/dev/null || die "hyperfine is not installed (apt-get install hyperfine)"

if [ -z "${NOOK_BIN_DIR:-}" ]; then
  if [ -x "$TARGET/release/nookd" ]; then NOOK_BIN_DIR=$TARGET/release; else NOOK_BIN_DIR=$TARGET/debug; fi
fi
if [ ! -x "$NOOK_BIN_DIR/nookd" ] || [ ! -x "$NOOK_BIN_DIR/nook" ]; then
  die "no nookd/nook in $NOOK_BIN_DIR (cargo build first)"
fi
if file -L "$NOOK_BIN_DIR/nookd" | grep -q 'with debug_info'; then BUILD=debug; else BUILD=release; fi

ROOTFS=$CACHE/bookworm-minbase
if [ ! -d "$ROOTFS" ]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed"
  echo "building $ROOTFS with debootstrap (a few minutes)..." >&2
  mkdir -p "$CACHE"
  rm -rf "$ROOTFS.tmp"
  debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $CACHE/debootstrap.log"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

UID_N=$(id -u "$USER_NAME")
GID_N=$(id -g "$USER_NAME")
BASE=$(mktemp -d /tmp/nook-bench-XXXXXX)
chmod 755 "$BASE"
NOOKD_PID=
cleanup() {
  if [ -n "$NOOKD_PID" ]; then kill -TERM "$NOOKD_PID" 2>/dev/null || true; wait "$NOOKD_PID" 2>/dev/null || true; fi
  if [ -f "$BASE/run/nook/pause.pid" ]; then kill -KILL "$(cut -d' ' -f1 "$BASE/run/nook/pause.pid")" 2>/dev/null || true; fi
  rm -rf "$BASE"
}
trap cleanup EXIT

# Layers: uncompressed tars with numeric owners; device nodes left out (images carry none).
L=$BASE/layers
mkdir -p "$L"
T=(tar -C "$ROOTFS" --numeric-owner --xattrs --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*')
"${T[@]}" -cf "$L/one.tar" .
"${T[@]}" --exclude=./usr/share --exclude=./var -cf "$L/l1.tar" .
"${T[@]}" -cf "$L/l2.tar" ./usr/share
"${T[@]}" -cf "$L/l3.tar" ./var
chmod 644 "$L"/*.tar
ONE_BYTES=$(stat -c %s "$L/one.tar")
THREE_BYTES=$(( $(stat -c %s "$L/l1.tar") + $(stat -c %s "$L/l2.tar") + $(stat -c %s "$L/l3.tar") ))
FILES=$(tar -tf "$L/one.tar" | wc -l)

BIN=$BASE/bin
mkdir -p "$BIN" "$BASE/run" "$BASE/data" "$BASE/config" "$BASE/x" "$BASE/root"
cp "$NOOK_BIN_DIR/nookd" "$NOOK_BIN_DIR/nook" "$BIN/"
[ -x "$NOOK_BIN_DIR/nook-shim" ] && cp "$NOOK_BIN_DIR/nook-shim" "$BIN/"
chmod 700 "$BASE/run"
chown -R "$UID_N:$GID_N" "$BASE/run" "$BASE/data" "$BASE/config" "$BASE/x" "$BASE/root"
printf '[snapshotter]\ndefault = "%s"\n[network]\ndriver = "none"\n' "$SNAPSHOTTER" >"$BASE/config.toml"
chmod 644 "$BASE/config.toml"

ENV=(env -i HOME="/home/$USER_NAME" USER="$USER_NAME" PATH="$BIN:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
     XDG_RUNTIME_DIR="$BASE/run" XDG_CONFIG_HOME="$BASE/config" XDG_DATA_HOME="$BASE/data"
     NOOK_ADDRESS="$BASE/run/nook/nook.sock")
AS_USER="setpriv --reuid=$USER_NAME --regid=$USER_NAME --init-groups ${ENV[*]}"

$AS_USER nookd --config "$BASE/config.toml" --root "$BASE/root" >"$BASE/nookd.log" 2>&1 &
NOOKD_PID=$!
for _ in $(seq 200); do
  $AS_USER nook version >/dev/null 2>&1 && break
  sleep 0.05
done
$AS_USER nook version >/dev/null || { cat "$BASE/nookd.log" >&2; die "nookd did not start"; }
PAUSE=$(cut -d' ' -f1 "$BASE/run/nook/pause.pid")
IN_NS="$AS_USER nsenter --preserve-credentials -U -m -t $PAUSE"

NOOK="$AS_USER nook snapshots --snapshotter $SNAPSHOTTER"
# The snapshots to remove between runs (children first).
CHAIN1=$($NOOK unpack "$L/one.tar")
$NOOK rm "$CHAIN1" >/dev/null
TOP3=$($NOOK unpack "$L/l1.tar" "$L/l2.tar" "$L/l3.tar")
RM3=""
k=$TOP3
while [ -n "$k" ]; do
  RM3="$RM3 $k"
  k=$($NOOK info "$k" --format json | jq -r .parent)
done
# shellcheck disable=SC2086 # a list of keys
$NOOK rm $RM3 >/dev/null

OUT=$BASE/results
mkdir -p "$OUT"
hf() { # name prepare command
  hyperfine --runs "$RUNS" --warmup 1 --export-json "$OUT/$1.json" --prepare "$2" "$3" >/dev/null 2>&1 \
    || { echo "hyperfine failed for $1: $3" >&2; hyperfine --runs 1 --prepare "$2" "$3" >&2; exit 1; }
  jq -r '.results[0].median' "$OUT/$1.json"
}

X=$BASE/x
RMX="rm -rf $X/t && mkdir $X/t && chown $UID_N:$GID_N $X/t && sync"
# Each measured unpack must really apply its layers (a reused snapshot would be a no-op).
T_NOOK1=$(hf nook1 "$NOOK rm $CHAIN1 >/dev/null 2>&1 || true; sync" \
  "$NOOK unpack --format json $L/one.tar | grep -q '\"applied\": 1'")
T_NOOK3=$(hf nook3 "$NOOK rm $RM3 >/dev/null 2>&1 || true; sync" \
  "$NOOK unpack --format json $L/l1.tar $L/l2.tar $L/l3.tar | grep -q '\"applied\": 3'")
T_TAR1=$(hf tar1 "$RMX" "$AS_USER tar -xf $L/one.tar -C $X/t")
T_TAR3=$(hf tar3 "$RMX" "$AS_USER sh -c 'tar -xf $L/l1.tar -C $X/t && tar -xf $L/l2.tar -C $X/t && tar -xf $L/l3.tar -C $X/t'")
T_TARNS1=$(hf tarns1 "$RMX" "$IN_NS tar --same-owner --xattrs -xf $L/one.tar -C $X/t")
T_TARNS3=$(hf tarns3 "$RMX" "$IN_NS sh -c 'for l in l1 l2 l3; do tar --same-owner --xattrs -xf $L/\$l.tar -C $X/t || exit 1; done'")

mbps() { echo "scale=1; $1 / 1000000 / $2" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
cat <<EOF
unpack benchmark ($BUILD build of nook, snapshotter $SNAPSHOTTER, $RUNS runs, median; $(uname -r))
rootfs: debootstrap --variant=minbase bookworm, $FILES entries, one layer $((ONE_BYTES / 1000000)) MB, three layers $((THREE_BYTES / 1000000)) MB (uncompressed tar)

                                  1 layer                 3 layers
nook snapshots unpack          $(printf '%6.3f s %7s MB/s' "$T_NOOK1" "$(mbps "$ONE_BYTES" "$T_NOOK1")")   $(printf '%6.3f s %7s MB/s' "$T_NOOK3" "$(mbps "$THREE_BYTES" "$T_NOOK3")")
tar -xf (user, host)           $(printf '%6.3f s %7s MB/s' "$T_TAR1" "$(mbps "$ONE_BYTES" "$T_TAR1")")   $(printf '%6.3f s %7s MB/s' "$T_TAR3" "$(mbps "$THREE_BYTES" "$T_TAR3")")
tar -xf --same-owner (userns)  $(printf '%6.3f s %7s MB/s' "$T_TARNS1" "$(mbps "$ONE_BYTES" "$T_TARNS1")")   $(printf '%6.3f s %7s MB/s' "$T_TARNS3" "$(mbps "$THREE_BYTES" "$T_TARNS3")")
ratio nook/tar (host)          $(ratio "$T_NOOK1" "$T_TAR1")                    $(ratio "$T_NOOK3" "$T_TAR3")
ratio nook/tar (userns)        $(ratio "$T_NOOK1" "$T_TARNS1")                    $(ratio "$T_NOOK3" "$T_TARNS3")
EOF
