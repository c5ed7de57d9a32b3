#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each one for SECONDS (default 25), one after another,
# starting from the committed seeds and regression inputs. Exits non-zero on the first crash,
# leaving the crashing input under the printed work directory (copy it, minimized with
# `-minimize_crash=1`, into fuzz/regressions/TARGET/ once fixed).
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]      e.g. bash fuzz/run.sh 600 layer_tar
#
# The layer_tar target creates files from arbitrary tars; when run as root and the user
# `nooktest` exists (CI, the dev machines), it runs as that user inside a user namespace
# (`unshare --map-auto --map-root-user`: root there, owning its subordinate ids, nothing of the
# host's), so even an applier bug could not write outside what that user may touch.
# Environment: FUZZ_TARGET_DIR (cargo's target dir, default fuzz/target), FUZZ_USER (nooktest),
# FUZZ_NO_BUILD=1 (run the binaries already built), FUZZ_BUILD_FLAGS (for cargo fuzz build).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-25}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(reference manifest config www_authenticate archive layer_tar)
fi
tdir=${FUZZ_TARGET_DIR:-fuzz/target}
user=${FUZZ_USER:-nooktest}
# cargo fuzz passes -Z flags (sanitizer, coverage); only a stable toolchain is installed here.
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --quiet
fi
# FUZZ_BUILD_FLAGS: e.g. "--dev -s none" (CI: a much shorter build, slower runs, no ASan)
read -r -a flags <<<"${FUZZ_BUILD_FLAGS:-}"
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  cargo fuzz build --target-dir "$tdir" "${flags[@]}"
fi
profile=release
if [[ " ${flags[*]} " == *" --dev "* || " ${flags[*]} " == *" -D "* ]]; then profile=debug; fi
bindir="$tdir/x86_64-unknown-linux-gnu/$profile"

work=$(mktemp -d /tmp/nook-fuzz.XXXXXX)
chmod 755 "$work"
sandbox=0
if [ "$(id -u)" = 0 ] && id "$user" >/dev/null 2>&1 && unshare --help | grep -q -- --map-auto; then
  sandbox=1
fi

for t in "${targets[@]}"; do
  corpus="$work/corpus-$t"
  # the targets' scratch files: tmpfs when there is one (layer_tar makes and removes ~30 files
  # per input; on disk that is most of its time)
  scratch="$work/scratch-$t"
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    scratch=$(mktemp -d /dev/shm/nook-fuzz.XXXXXX)
  fi
  mkdir -p "$corpus" "$work/artifacts-$t" "$scratch"
  cp fuzz/seeds/"$t"/* "$corpus"/
  if [ -d fuzz/regressions/"$t" ]; then cp fuzz/regressions/"$t"/* "$corpus"/; fi
  cp "$bindir/$t" "$work/$t"
  cmd=("$work/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048
    -artifact_prefix="$work/artifacts-$t/" "$corpus")
  log="$work/$t.log"
  set +e
  if [ "$t" = layer_tar ] && [ $sandbox = 1 ]; then
    chown -R "$user:" "$corpus" "$work/artifacts-$t" "$scratch"
    runuser -u "$user" -- env NOOK_FUZZ_DIR="$scratch" \
      unshare --user --map-auto --map-root-user "${cmd[@]}" >"$log" 2>&1
  else
    NOOK_FUZZ_DIR="$scratch" "${cmd[@]}" >"$log" 2>&1
  fi
  rc=$?
  set -e
  rm -rf "$scratch"
  if [ $rc != 0 ]; then
    tail -n 60 "$log"
    echo "fuzz $t: FAILED (exit $rc); input and log kept in $work"
    exit 1
  fi
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)
  echo "fuzz $t: ${runs:-?}, corpus $(find "$corpus" -type f | wc -l) inputs, no crash"
done
rm -rf "$work"
