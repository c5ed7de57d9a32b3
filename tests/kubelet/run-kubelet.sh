#!/bin/sh
# Starts a rootless kubelet on nook (docs/kubernetes.md, "A rootless kubelet"). Run it inside
# nookd's user and mount namespaces, where the user is root, e.g.
#   nook-rootless-setuptool.sh nsenter -- sh run-kubelet.sh DIR kubelet --config=... ARGS
# DIR (the user's) holds var/lib/kubelet (give --root-dir=DIR/var/lib/kubelet) and var/log.
set -e
K=$1
shift
# In nookd's mount namespace: the kubelet's root directory becomes a shared mount, so the tmpfs
# the kubelet mounts there for a pod (emptyDir of medium Memory, secrets, projected volumes)
# reaches nookd and is what nook binds into the container.
mount --bind "$K/var/lib/kubelet" "$K/var/lib/kubelet"
mount --make-shared "$K/var/lib/kubelet"
# The kubelet's own mount namespace (below nookd's, sharing that mount): it keeps its
# device-plugin socket in /var/lib/kubelet/device-plugins and its log links in
# /var/log/containers whatever --root-dir says, which an unprivileged user cannot create; the
# user's var/lib and var/log are bound over them, as rootlesskit's --copy-up does for usernetes.
exec unshare -m --propagation unchanged sh -c '
	mount --bind "$0/var/lib" /var/lib
	mount --bind "$0/var/log" /var/log
	exec "$@"' "$K" "$@"
