#!/bin/bash
# Builds a real kubelet from the Go module proxy, for trying nook's CRI door with it
# (docs/kubernetes.md, "A rootless kubelet"). Not part of .ci/run: it takes long on 2 cores.
#
# `go install k8s.io/kubernetes/cmd/kubelet@vX` refuses (k8s.io/kubernetes's go.mod replaces
# its k8s.io/* staging modules with ./staging paths), so a scratch module requires
# k8s.io/kubernetes vX and pins each staging module to the matching published v0.Y.Z.
#
# usage: bash tests/kubelet/build-kubelet.sh [v1.36.3]   -> /var/tmp/go/bin/kubelet
set -euo pipefail
VERSION=${1:-v1.36.3}
STAGING=v0.${VERSION#v1.}
WORK=/var/tmp/kubelet-build
OUT=${KUBELET_OUT:-/var/tmp/go/bin/kubelet}
mkdir -p "$WORK" "$(dirname "$OUT")"
cd "$WORK"
rm -f go.mod go.sum
go mod init kubelet-build >/dev/null 2>&1
go mod download -json "k8s.io/kubernetes@$VERSION" >/dev/null
kmod=$(go env GOMODCACHE)/k8s.io/kubernetes@$VERSION/go.mod
# every `k8s.io/NAME => ./staging/src/k8s.io/NAME` of kubernetes' go.mod, pinned to STAGING
# (but the sample-* ones: examples the proxy does not serve, and nothing the kubelet imports)
mods=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kmod" | grep -v '^k8s.io/sample-')
[ -n "$mods" ] || { echo "build-kubelet: no staging replaces found in $kmod" >&2; exit 1; }
go mod edit -go="$(sed -n 's/^go //p' "$kmod")"
go mod edit -require="k8s.io/kubernetes@$VERSION"
for m in $mods; do
	go mod edit -require="$m@$STAGING" -replace="$m=$m@$STAGING"
done
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
GO
echo "build-kubelet: resolving modules for kubernetes $VERSION (staging $STAGING)" >&2
go mod tidy
echo "build-kubelet: building (GOFLAGS=-p=1, nice), this takes a while on 2 cores" >&2
GOFLAGS="${GOFLAGS:--p=1} -buildvcs=false" nice -n 10 \
	go build -ldflags "-X k8s.io/component-base/version.gitVersion=$VERSION" -o "$OUT" k8s.io/kubernetes/cmd/kubelet
"$OUT" --version
