#!/usr/bin/env bash
# nook-rootless-setuptool.sh: check the prerequisites of rootless nook, and install or remove
# the `systemd --user` unit that runs nookd. Run it as the user who will use nook, never as root
# (except `delegate`, the one step that needs root).
#
#   nook-rootless-setuptool.sh check                 one line per prerequisite, exit 1 on a must-have
#   nook-rootless-setuptool.sh install               check, write and start nook.service
#   nook-rootless-setuptool.sh uninstall [--purge]   stop and remove the unit (--purge: and all data)
#   nook-rootless-setuptool.sh nsenter -- CMD...     run CMD in nookd's user and mount namespaces
#   nook-rootless-setuptool.sh delegate USER         (as root) delegate cgroup controllers to USER
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
UNIT_NAME=nook.service
WAIT_SECS=${NOOK_SETUP_TIMEOUT:-30}

usage() {
	cat <<EOF
Usage: $PROG [OPTIONS] COMMAND

Set up nook, the rootless container runtime, for the current user.

Commands:
  check              Check every prerequisite; prints one line each:
                       [OK] ..., [WARN] ... (works, with a limit), [FAIL] ... -> how to fix.
                     Exits 1 if a must-have fails.
  install            Run check, install ~/.config/systemd/user/$UNIT_NAME, enable and
                     start it, and wait (${WAIT_SECS}s) until \`nook version\` answers.
                     Running it again is harmless (it updates the unit if it changed).
  uninstall          Stop and disable the unit and remove it. Images, containers and
                     configuration are kept.
  uninstall --purge  Also stop every process in nook's namespaces (containers, shims,
                     the pause process, the network link) and delete the root directory
                     (images, snapshots, containers), the state directory and the config.
  nsenter -- CMD...  Run CMD inside the running nookd's user and mount namespaces, with
                     CONTAINERD_ADDRESS set to nook's socket: containerd's clients that mount
                     snapshots themselves work there (e.g. \`nsenter -- ctr images ls\`).
  delegate USER      As root, once: delegate cgroup controllers to USER so that container
                     resource limits (--memory, --cpus, --pids-limit, ...), stats and pause
                     work. cgroup v2 with systemd: a user@.service drop-in with
                     Delegate=cpu cpuset io memory pids, then a daemon-reload. cgroup v1 or
                     hybrid: a subtree nook/user-UID owned by USER in every v1 hierarchy,
                     made again at boot by nook-cgroup-delegate@USER.service where systemd
                     runs. Running it again is harmless.

Options:
  --nookd PATH       The nookd binary (default: nookd in PATH or ~/.local/bin).
  --force            install: go on even if check fails.
  --address PATH     nsenter: nookd's socket (default: \$NOOK_ADDRESS, else the configured
                     or default socket).
  -h, --help         Show this help.

Environment:
  NOOK_SETUP_TIMEOUT seconds install waits for the daemon (default 30).
  NOOK_UNIT_TEMPLATE the unit template (default: systemd-user/$UNIT_NAME next to this tool).
EOF
}

# ---------------------------------------------------------------------------------------------
# output helpers

FAILS=0
WARNS=0
ok() { printf '[OK] %s\n' "$*"; }
warn() {
	printf '[WARN] %s\n' "$*"
	WARNS=$((WARNS + 1))
}
fail() {
	printf '[FAIL] %s\n' "$*"
	FAILS=$((FAILS + 1))
}
info() { printf '%s\n' "$*"; }
die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}

# Finds a program in PATH, then in the sbin directories a user's PATH often lacks.
find_prog() {
	local name=$1 d
	if command -v "$name" >/dev/null 2>&1; then
		command -v "$name"
		return 0
	fi
	for d in /usr/local/sbin /usr/sbin /sbin "$HOME/.local/bin"; do
		if [ -x "$d/$name" ]; then
			printf '%s\n' "$d/$name"
			return 0
		fi
	done
	return 1
}

read_sysctl() {
	local f="/proc/sys/${1//.//}"
	if [ -r "$f" ]; then cat "$f"; else return 1; fi
}

# ---------------------------------------------------------------------------------------------
# who and where

USER_NAME=$(id -un)
USER_ID=$(id -u)
CONFIG_HOME=${XDG_CONFIG_HOME:-$HOME/.config}
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
STATE_HOME=${XDG_STATE_HOME:-$HOME/.local/state}
CONFIG_DIR=$CONFIG_HOME/nook
CONFIG_FILE=$CONFIG_DIR/config.toml
UNIT_DIR=$CONFIG_HOME/systemd/user
UNIT_FILE=$UNIT_DIR/$UNIT_NAME
LOG_FILE=$STATE_HOME/nook/nookd.log
NOOKD_OPT=""
ADDRESS_OPT=""
FORCE=0

# A top-level string key (root, state, address) of config.toml, or nothing.
config_key() {
	[ -r "$CONFIG_FILE" ] || return 0
	awk -v key="$1" '
		/^[[:space:]]*\[/ { exit }
		$0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
			v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]*(#.*)?$/, "", v)
			gsub(/^["'\'']|["'\'']$/, "", v); print v; exit
		}' "$CONFIG_FILE"
}

# XDG_RUNTIME_DIR as the user manager (and so nookd) sees it.
manager_runtime_dir() {
	local v=""
	if command -v systemctl >/dev/null 2>&1; then
		v=$(systemctl --user show-environment 2>/dev/null | sed -n 's/^XDG_RUNTIME_DIR=//p' || true)
	fi
	printf '%s\n' "${v:-${XDG_RUNTIME_DIR:-/run/user/$USER_ID}}"
}

nook_root() {
	local r
	r=$(config_key root)
	printf '%s\n' "${r:-$DATA_HOME/nook}"
}

nook_state() {
	local s
	s=$(config_key state)
	printf '%s\n' "${s:-$(manager_runtime_dir)/nook}"
}

nook_address() {
	local a
	a=$(config_key address)
	printf '%s\n' "${a:-$(nook_state)/nook.sock}"
}

find_nookd() {
	if [ -n "$NOOKD_OPT" ]; then
		[ -x "$NOOKD_OPT" ] || return 1
		(cd "$(dirname "$NOOKD_OPT")" && printf '%s/%s\n' "$(pwd)" "$(basename "$NOOKD_OPT")")
		return 0
	fi
	local p
	for p in "$(command -v nookd 2>/dev/null || true)" "$HOME/.local/bin/nookd" /usr/local/bin/nookd; do
		if [ -n "$p" ] && [ -x "$p" ]; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	return 1
}

# The nook CLI next to nookd, else in PATH.
find_nook() {
	local d
	d=$(dirname "$1")
	if [ -x "$d/nook" ]; then printf '%s\n' "$d/nook"; else find_prog nook; fi
}

# ---------------------------------------------------------------------------------------------
# check

check_userns() {
	local max clone restrict
	max=$(read_sysctl user.max_user_namespaces || echo "")
	if [ -z "$max" ]; then
		fail "user namespaces: /proc/sys/user/max_user_namespaces is missing -> use a kernel built with CONFIG_USER_NS=y"
		return
	elif [ "$max" -le 0 ]; then
		fail "user namespaces are disabled (user.max_user_namespaces=$max) -> sudo sysctl -w user.max_user_namespaces=28633 && echo user.max_user_namespaces=28633 | sudo tee /etc/sysctl.d/90-nook-userns.conf"
		return
	fi
	if clone=$(read_sysctl kernel.unprivileged_userns_clone); then
		if [ "$clone" != 1 ]; then
			fail "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=$clone) -> sudo sysctl -w kernel.unprivileged_userns_clone=1 && echo kernel.unprivileged_userns_clone=1 | sudo tee /etc/sysctl.d/90-nook-userns.conf"
			return
		fi
	fi
	if restrict=$(read_sysctl kernel.apparmor_restrict_unprivileged_userns) && [ "$restrict" = 1 ]; then
		local nookd profile_ok=0
		nookd=$(find_nookd || echo "$HOME/.local/bin/nookd")
		if [ -d /etc/apparmor.d ] && grep -rlsF -- "$nookd" /etc/apparmor.d 2>/dev/null | xargs -r grep -ls 'userns' >/dev/null 2>&1; then
			profile_ok=1
		fi
		if [ "$profile_ok" = 1 ]; then
			ok "user namespaces: AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns=1), but a profile allows $nookd"
		else
			fail "AppArmor forbids unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu 23.10+) -> allow nookd with a profile: printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile nookd $nookd flags=(unconfined) {\\n  userns,\\n}\\n' | sudo tee /etc/apparmor.d/nookd && sudo apparmor_parser -r /etc/apparmor.d/nookd (or: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
			return
		fi
	fi
	if unshare --user true 2>/dev/null; then
		ok "user namespaces: user.max_user_namespaces=$max, an unprivileged user namespace can be created"
	else
		fail "user namespaces: \`unshare --user true\` fails for $USER_NAME -> check user.max_user_namespaces, kernel.unprivileged_userns_clone, AppArmor/SELinux policy, and seccomp in containers"
	fi
}

# Prints the start of a free 65536-id range after every range in the file.
suggest_range() {
	awk -F: 'BEGIN { m = 100000 } NF >= 3 && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { if ($2 + $3 > m) m = $2 + $3 } END { print m }' "$1" 2>/dev/null || echo 100000
}

check_subid() {
	local file=$1 opt=$2 count start
	if [ ! -r "$file" ]; then
		start=100000
		fail "$file is missing or unreadable -> sudo usermod --add-$opt $start-$((start + 65535)) $USER_NAME"
		return
	fi
	count=$(awk -F: -v u="$USER_NAME" -v id="$USER_ID" '
		$0 !~ /^[[:space:]]*#/ && NF >= 3 && ($1 == u || $1 == id) { c += $3 } END { print c + 0 }' "$file")
	start=$(suggest_range "$file")
	if [ "$count" -eq 0 ]; then
		fail "no entry for $USER_NAME in $file -> sudo usermod --add-$opt $start-$((start + 65535)) $USER_NAME   (adds the line \"$USER_NAME:$start:65536\")"
	elif [ "$count" -lt 65536 ]; then
		warn "$file gives $USER_NAME only $count ids (65536 are needed for most images: files owned by higher ids fail to unpack) -> sudo usermod --add-$opt $start-$((start + 65535)) $USER_NAME"
	else
		ok "$file: $USER_NAME has $count subordinate ids"
	fi
}

check_idmap_helper() {
	local name=$1 p owner mode caps
	if ! p=$(find_prog "$name"); then
		fail "$name not found -> sudo apt-get install uidmap (Debian/Ubuntu), sudo dnf install shadow-utils (Fedora), or your distribution's shadow package"
		return
	fi
	owner=$(stat -Lc %u "$p")
	mode=$(stat -Lc %a "$p")
	if [ "$owner" = 0 ] && [ $((8#$mode & 8#4000)) -ne 0 ]; then
		ok "$p is setuid root"
		return
	fi
	caps=""
	if command -v getcap >/dev/null 2>&1; then
		caps=$(getcap "$p" 2>/dev/null || true)
	fi
	if [ -n "$caps" ] && printf '%s' "$caps" | grep -qE 'cap_set[ug]id'; then
		ok "$p has file capabilities (${caps#"$p"})"
	else
		fail "$p is neither setuid root nor has file capabilities -> sudo chmod u+s $p   (or: sudo setcap cap_setuid,cap_setgid+ep $p)"
	fi
}

# Whether the current user can open a device read-write.
can_open() {
	(exec 3<>"$1") 2>/dev/null
}

check_devices() {
	if [ ! -e /dev/net/tun ]; then
		fail "/dev/net/tun does not exist (containers' network needs it) -> sudo modprobe tun (and add tun to /etc/modules-load.d/), or set [network] driver = \"none\" in $CONFIG_FILE"
	elif can_open /dev/net/tun; then
		ok "/dev/net/tun can be opened"
	else
		fail "/dev/net/tun cannot be opened by $USER_NAME (mode $(stat -c %a /dev/net/tun)) -> sudo chmod 666 /dev/net/tun (it is 0666 on most distributions; a udev rule KERNEL==\"tun\", MODE=\"0666\" keeps it), or set [network] driver = \"none\""
	fi
	if [ ! -e /dev/fuse ]; then
		warn "/dev/fuse does not exist: the fuse-overlayfs snapshotter (the fallback when kernel overlayfs does not work in a user namespace) is unavailable -> sudo modprobe fuse"
	elif can_open /dev/fuse; then
		ok "/dev/fuse can be opened"
	else
		warn "/dev/fuse cannot be opened by $USER_NAME (mode $(stat -c %a /dev/fuse)): fuse-overlayfs is unavailable -> sudo chmod 666 /dev/fuse (0666 on most distributions)"
	fi
}

check_network_helper() {
	local p
	if p=$(find_prog pasta); then
		ok "pasta found: $p"
	elif p=$(find_prog slirp4netns); then
		ok "slirp4netns found: $p ($(slirp4netns --version 2>/dev/null | head -n1 || true))"
	else
		fail "neither pasta nor slirp4netns is installed (containers' network needs one) -> sudo apt-get install passt (or slirp4netns), or set [network] driver = \"none\""
	fi
}

check_oci_runtime() {
	local found=0 rt p
	for rt in runc crun; do
		if p=$(find_prog "$rt"); then
			ok "$rt found: $p ($("$p" --version 2>/dev/null | head -n1 || true))"
			found=1
		fi
	done
	if [ "$found" = 0 ]; then
		fail "no OCI runtime: neither runc nor crun is installed -> sudo apt-get install runc (or crun)"
	fi
}

# A trial overlay mount inside an unprivileged user namespace, on the filesystem of nook's root.
check_overlay() {
	local root base tmp out
	root=$(nook_root)
	base=$root
	while [ ! -d "$base" ]; do base=$(dirname "$base"); done
	if ! tmp=$(mktemp -d "$base/.nook-overlay-check.XXXXXX" 2>/dev/null); then
		tmp=$(mktemp -d)
	fi
	mkdir -p "$tmp/lower" "$tmp/upper" "$tmp/work" "$tmp/merged"
	echo x >"$tmp/lower/f"
	# shellcheck disable=SC2016 # expanded by the inner shell
	if out=$(unshare --user --map-root-user --mount sh -c '
		cd "$1" && mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work,userxattr merged &&
		echo y >merged/f && rm merged/f && umount merged' sh "$tmp" 2>&1); then
		ok "overlayfs works in a user namespace (userxattr) on $base"
	elif out=$(unshare --user --map-root-user --mount sh -c '
		cd "$1" && mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged && umount merged' sh "$tmp" 2>&1); then
		ok "overlayfs works in a user namespace (without userxattr) on $base"
	elif find_prog fuse-overlayfs >/dev/null && can_open /dev/fuse; then
		warn "kernel overlayfs cannot be mounted in a user namespace on $base (${out//$'\n'/ }): nook falls back to fuse-overlayfs (slower); a kernel >= 5.11 and a local filesystem (not NFS) for $root fix this"
	else
		warn "neither kernel overlayfs in a user namespace (${out//$'\n'/ }) nor fuse-overlayfs works on $base: nook falls back to the native snapshotter (copies, slow, disk hungry) -> sudo apt-get install fuse-overlayfs, and make /dev/fuse usable"
	fi
	# overlay leaves work/work with mode 000
	chmod -R u+rwx "$tmp" 2>/dev/null || true
	rm -rf "$tmp" 2>/dev/null || true
}

check_runtime_dir() {
	local d=${XDG_RUNTIME_DIR:-} owner mode
	if [ -z "$d" ]; then
		fail "XDG_RUNTIME_DIR is not set (common after \`su\` or \`sudo -u\`) -> log in through a session (ssh, a desktop, \`machinectl shell $USER_NAME@\`) or export XDG_RUNTIME_DIR=/run/user/$USER_ID"
		return
	fi
	if [ ! -d "$d" ]; then
		fail "XDG_RUNTIME_DIR=$d does not exist -> log in through a session (systemd-logind creates /run/user/$USER_ID), or: sudo loginctl enable-linger $USER_NAME"
		return
	fi
	owner=$(stat -c %u "$d")
	mode=$(stat -c %a "$d")
	if [ "$owner" != "$USER_ID" ]; then
		fail "XDG_RUNTIME_DIR=$d belongs to uid $owner, not to $USER_NAME (uid $USER_ID): it was inherited through \`su\`/\`sudo\` -> log in as $USER_NAME properly (\`machinectl shell $USER_NAME@\` or ssh), or export XDG_RUNTIME_DIR=/run/user/$USER_ID"
	elif [ "$mode" != 700 ]; then
		warn "XDG_RUNTIME_DIR=$d has mode $mode, expected 700 -> chmod 700 $d"
	else
		ok "XDG_RUNTIME_DIR=$d is owned by $USER_NAME"
	fi
}

# Whether a `systemd --user` manager answers; sets SYSTEMD_STATE.
SYSTEMD_STATE=""
systemd_user_running() {
	command -v systemctl >/dev/null 2>&1 || return 1
	SYSTEMD_STATE=$(systemctl --user is-system-running 2>/dev/null || true)
	case "$SYSTEMD_STATE" in
	running | degraded | starting | initializing | maintenance) return 0 ;;
	esac
	[ -S "${XDG_RUNTIME_DIR:-/nonexistent}/systemd/private" ] && systemctl --user show-environment >/dev/null 2>&1
}

check_systemd() {
	if systemd_user_running; then
		ok "systemd --user is running (${SYSTEMD_STATE:-reachable})"
	else
		warn "no running \`systemd --user\` for $USER_NAME (needed by \`$PROG install\`; without it start nookd yourself) -> log in through a session with systemd-logind, check \`systemctl --user status\`, or: sudo loginctl enable-linger $USER_NAME"
	fi
}

check_linger() {
	local linger=""
	if command -v loginctl >/dev/null 2>&1; then
		linger=$(loginctl show-user "$USER_NAME" -p Linger --value 2>/dev/null || true)
	fi
	if [ -z "$linger" ] && [ -e "/var/lib/systemd/linger/$USER_NAME" ]; then
		linger=yes
	fi
	if [ "$linger" = yes ]; then
		ok "lingering is enabled: nook and its containers keep running after you log out"
	else
		warn "lingering is off: systemd stops nook and kills its containers when your last session ends -> sudo loginctl enable-linger $USER_NAME"
	fi
}

# The v1 hierarchies mounted (mount points), one per line, with the v2 one of a hybrid host
# (crun makes its cgroups there too).
v1_hierarchies() {
	awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

# The controllers of a v1 hierarchy's mount point (cpu,cpuacct; name=systemd; unified).
v1_controllers() {
	awk -v m="$1" '$2 == m { n = split($4, o, ","); s = "";
		for (i = 1; i <= n; i++) if (o[i] !~ /^(rw|ro|relatime|noatime|nosuid|nodev|noexec|clone_children|xattr|nsdelegate|memory_recursiveprot|release_agent=.*)$/) s = s (s ? "," : "") o[i];
		if ($3 == "cgroup2") s = "unified";
		print s }' /proc/self/mounts
}

check_cgroups() {
	local f controllers h sub have="" missing=""
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		f=/sys/fs/cgroup/user.slice/user-$USER_ID.slice/user@$USER_ID.service/cgroup.controllers
		controllers=$(cat "$f" 2>/dev/null || true)
		case " $controllers " in
		*" memory "*" pids "* | *" pids "*" memory "*)
			ok "cgroup v2 controllers delegated to you: $controllers"
			;;
		*)
			warn "cgroup v2 controllers not delegated to $USER_NAME (${controllers:-none}): nook refuses --memory, --cpus, --pids-limit, pause and stats -> sudo $PROG delegate $USER_NAME (then log in again)"
			;;
		esac
		return 0
	fi
	sub=nook/user-$USER_ID
	while read -r h; do
		[ -n "$h" ] || continue
		if [ -w "$h/$sub" ] && [ -w "$h/$sub/cgroup.procs" ]; then
			have="$have $(v1_controllers "$h")"
		else
			missing="$missing $(v1_controllers "$h")"
		fi
	done < <(v1_hierarchies)
	if [ -z "$have$missing" ]; then
		warn "no cgroup hierarchy is mounted: container resource limits are not available"
	elif [ -z "$missing" ]; then
		ok "cgroup v1 controllers delegated to you (/sys/fs/cgroup/*/$sub):$have"
	else
		warn "cgroup v1 controllers not delegated to $USER_NAME:$missing${have:+ (delegated:$have)}: nook refuses --memory, --cpus, --pids-limit, pause and stats -> sudo $PROG delegate $USER_NAME"
	fi
}

check_ports() {
	local start
	start=$(read_sysctl net.ipv4.ip_unprivileged_port_start || echo 1024)
	if [ "$start" -le 0 ] 2>/dev/null; then
		ok "any host port can be published (net.ipv4.ip_unprivileged_port_start=0)"
	else
		ok "host ports >= $start can be published; for lower ones: sudo sysctl -w net.ipv4.ip_unprivileged_port_start=0 (or publish e.g. 8080 and redirect)"
	fi
}

check_binaries() {
	local nookd nook
	if nookd=$(find_nookd); then
		if ! command -v nookd >/dev/null 2>&1; then
			warn "nookd is $nookd but its directory is not in your PATH -> export PATH=\"$(dirname "$nookd"):\$PATH\" (add it to ~/.profile)"
		else
			ok "nookd found: $nookd"
		fi
		if ! nook=$(find_nook "$nookd"); then
			fail "nook (the CLI) not found next to $nookd or in PATH -> build and install nook as README.md says"
		fi
	else
		fail "nookd not found in PATH, ~/.local/bin or /usr/local/bin -> build and install it as README.md says (the binaries go to ~/.local/bin), or pass --nookd PATH"
	fi
}

cmd_check() {
	FAILS=0
	WARNS=0
	check_binaries
	check_userns
	check_subid /etc/subuid subuids
	check_subid /etc/subgid subgids
	check_idmap_helper newuidmap
	check_idmap_helper newgidmap
	check_devices
	check_network_helper
	check_oci_runtime
	check_overlay
	check_runtime_dir
	check_systemd
	check_linger
	check_cgroups
	check_ports
	if [ "$FAILS" -gt 0 ]; then
		info "$FAILS must-have prerequisite(s) failed, $WARNS warning(s): fix the [FAIL] lines above and run \`$PROG check\` again."
		return 1
	fi
	info "All must-have prerequisites are met ($WARNS warning(s))."
}

# ---------------------------------------------------------------------------------------------
# install

unit_template() {
	local t
	for t in "${NOOK_UNIT_TEMPLATE:-}" "$SCRIPT_DIR/../systemd-user/$UNIT_NAME" \
		"$SCRIPT_DIR/../share/nook/$UNIT_NAME" "$SCRIPT_DIR/$UNIT_NAME"; do
		if [ -n "$t" ] && [ -f "$t" ]; then
			printf '%s\n' "$t"
			return 0
		fi
	done
	return 1
}

# Whether the user's journal can be written (journald running); else nookd logs to a file.
have_journal() {
	[ -S /run/systemd/journal/socket ] && [ -S /run/systemd/journal/stdout ]
}

# Renders the unit for this user to stdout.
render_unit() {
	local template=$1 nookd=$2 path_line
	path_line="$(dirname "$nookd"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	awk -v nookd="$nookd" -v path="$path_line" -v logfile="$3" '
		/^ExecStart=/ {
			print "ExecStart=" nookd
			if (logfile != "") { print "StandardOutput=append:" logfile; print "StandardError=append:" logfile }
			next
		}
		/^Environment=PATH=/ { print "Environment=PATH=" path; next }
		{ print }' "$template"
}

wait_ready() {
	local nook=$1 addr=$2 deadline state answered=0
	deadline=$((SECONDS + WAIT_SECS))
	while [ "$SECONDS" -lt "$deadline" ]; do
		state=$(systemctl --user is-active "$UNIT_NAME" 2>/dev/null || true)
		if [ "$answered" = 0 ] && "$nook" --address "$addr" version >/dev/null 2>&1; then
			answered=1
		fi
		if [ "$answered" = 1 ] && [ "$state" = active ]; then
			return 0
		fi
		case "$state" in
		failed) break ;;
		esac
		sleep 0.3
	done
	if [ "$answered" = 1 ]; then
		warn "nookd answers on $addr but the unit is still '$state' after ${WAIT_SECS}s: nookd did not send READY=1 to systemd (Type=notify)"
		return 0
	fi
	return 1
}

show_failure() {
	info "nookd did not answer within ${WAIT_SECS}s. Unit status:"
	systemctl --user --no-pager -l status "$UNIT_NAME" 2>&1 | sed 's/^/    /' || true
	if [ -f "$LOG_FILE" ]; then
		info "Last lines of $LOG_FILE:"
		tail -n 30 "$LOG_FILE" | sed 's/^/    /'
	elif command -v journalctl >/dev/null 2>&1; then
		info "Last lines of its log (journalctl --user -u $UNIT_NAME):"
		journalctl --user -u "$UNIT_NAME" -n 30 --no-pager 2>&1 | sed 's/^/    /' || true
	fi
	info "See docs/troubleshooting.md for the messages nookd prints and their fixes."
}

cmd_install() {
	local nookd nook template tmp changed=0 addr default_addr logfile=""
	if ! cmd_check; then
		if [ "$FORCE" = 1 ]; then
			info "Going on despite the failed checks (--force)."
		else
			die "not installing: fix the [FAIL] lines above first (or use --force)"
		fi
	fi
	systemd_user_running || die "no running \`systemd --user\` for $USER_NAME: log in through a session (or \`sudo loginctl enable-linger $USER_NAME\`) and retry; without systemd, run nookd yourself"
	nookd=$(find_nookd) || die "nookd not found: build and install it as README.md says, or pass --nookd PATH"
	nook=$(find_nook "$nookd") || die "the nook CLI was not found next to $nookd or in PATH"
	template=$(unit_template) || die "unit template $UNIT_NAME not found (looked in $SCRIPT_DIR/../systemd-user/): set NOOK_UNIT_TEMPLATE=/path/to/systemd-user/$UNIT_NAME"
	if ! have_journal; then
		logfile=$LOG_FILE
		mkdir -p "$(dirname "$logfile")"
	fi
	mkdir -p "$UNIT_DIR"
	tmp=$(mktemp "$UNIT_DIR/.$UNIT_NAME.XXXXXX")
	render_unit "$template" "$nookd" "$logfile" >"$tmp"
	if [ -f "$UNIT_FILE" ] && cmp -s "$tmp" "$UNIT_FILE"; then
		rm -f "$tmp"
		info "Unit $UNIT_FILE is up to date."
	else
		mv -f "$tmp" "$UNIT_FILE"
		changed=1
		info "Wrote $UNIT_FILE (ExecStart=$nookd)."
	fi
	systemctl --user daemon-reload
	systemctl --user enable "$UNIT_NAME" >/dev/null 2>&1 || systemctl --user enable "$UNIT_NAME"
	if [ "$changed" = 1 ] && systemctl --user is-active --quiet "$UNIT_NAME"; then
		info "Restarting nook to apply the new unit (running containers keep running)."
		systemctl --user --no-block restart "$UNIT_NAME"
	else
		systemctl --user --no-block start "$UNIT_NAME"
	fi
	addr=$(nook_address)
	if ! wait_ready "$nook" "$addr"; then
		show_failure
		exit 1
	fi
	info ""
	info "nook is running (systemctl --user status nook; logs: ${logfile:-journalctl --user -u nook})."
	default_addr=${XDG_RUNTIME_DIR:-/run/user/$USER_ID}/nook/nook.sock
	if [ "$addr" != "$default_addr" ]; then
		info "Its socket is $addr, not the default $default_addr; tell nook:"
		info "    export NOOK_ADDRESS=$addr"
	fi
	dh=$(NOOK_ADDRESS=$addr "$nook" info --format json 2>/dev/null | sed -n 's/.*"docker_host": *"\([^"]*\)".*/\1/p')
	if [ -n "$dh" ]; then
		info "The Docker API (docker CLI, docker-compose, the Docker SDKs) is served too:"
		info "    export DOCKER_HOST=$dh"
	fi
	if ! command -v nook >/dev/null 2>&1; then
		info "Put nook in your PATH:"
		info "    export PATH=\"$(dirname "$nook"):\$PATH\""
	fi
	info "Try it:"
	info "    nook version"
	info "    nook info"
	if [ -x "$SCRIPT_DIR/../scripts/busybox-image.sh" ]; then
		info "    $(cd "$SCRIPT_DIR/.." && pwd)/scripts/busybox-image.sh | nook load    # an image without a registry"
	else
		info "    nook pull docker.io/library/busybox:latest"
	fi
	info "    nook run --rm busybox echo hello"
	info "Stop it with \`systemctl --user stop nook\`, remove it with \`$PROG uninstall\`."
}

# ---------------------------------------------------------------------------------------------
# uninstall

# Reads a pid file's first word when that process is alive, ours, and its name matches the
# extended regular expression $2 (so a recycled pid is never killed).
live_pid() {
	local pid comm
	[ -r "$1" ] || return 1
	pid=$(awk '{ print $1; exit }' "$1")
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[ "$(stat -c %u "/proc/$pid")" = "$USER_ID" ] || return 1
	printf '%s' "$comm" | grep -qxE "$2" || return 1
	printf '%s\n' "$pid"
}

# Kills every process in the user namespace of the pause process (containers, shims; the pause
# process itself too when $2 is "all"), from inside that namespace, where we may signal every
# mapped id.
kill_namespace() {
	local pause=$1 all=${2:-}
	# shellcheck disable=SC2016 # expanded by the inner shell
	nsenter --user --target "$pause" sh -c '
		me=$(readlink /proc/self/ns/user)
		for p in /proc/[0-9]*; do
			pid=${p#/proc/}
			[ "$pid" = "$$" ] && continue
			[ "$pid" = "$1" ] && continue
			[ "$(readlink "$p/ns/user" 2>/dev/null)" = "$me" ] && kill -9 "$pid" 2>/dev/null
		done
		[ "$2" = all ] && kill -9 "$1" 2>/dev/null
		true' sh "$pause" "$all" 2>/dev/null || true
	if [ "$all" = all ]; then
		kill -9 "$pause" 2>/dev/null || true
	fi
	sleep 0.2
}

# Removes a directory that may hold files owned by subordinate ids.
remove_tree() {
	local dir=$1 pause=$2
	[ -e "$dir" ] || return 0
	if [ -n "$pause" ] && [ -d "/proc/$pause" ] && nsenter --user --target "$pause" rm -rf "$dir" 2>/dev/null; then
		return 0
	fi
	if rm -rf "$dir" 2>/dev/null; then
		return 0
	fi
	if unshare --map-auto --map-root-user rm -rf "$dir" 2>/dev/null; then
		return 0
	fi
	warn "could not delete all of $dir (files owned by subordinate ids) -> sudo rm -rf $dir"
}

# Removes crun's state directory when it is empty (crun makes $XDG_RUNTIME_DIR/crun when
# nookd probes or runs it), and says how to remove the binaries, which uninstall keeps.
uninstall_leftovers() {
	local nookd
	rmdir "$(manager_runtime_dir)/crun" 2>/dev/null || true
	if nookd=$(find_nookd); then
		if [ "$(dirname "$nookd")" = "$HOME/.local/bin" ]; then
			info "The binaries stay in $HOME/.local/bin: remove them with \`cargo uninstall --root ~/.local nook\`."
		else
			info "The binaries stay in $(dirname "$nookd"): remove nook, nookd and nook-shim there (installed with cargo: \`cargo uninstall --root <that directory's parent> nook\`)."
		fi
	fi
}

cmd_uninstall() {
	local purge=$1 state root pause link kept=""
	state=$(nook_state)
	root=$(nook_root)
	pause=$(live_pid "$state/pause.pid" nook-pause || true)
	if [ "$purge" = 1 ]; then
		info "Purging: this stops every container, shim, the pause process and the network link, and deletes:"
		info "    $root    (images, content, snapshots, containers, metadata)"
		info "    $state    (runtime state: socket, pid files)"
		info "    $CONFIG_DIR    (configuration)"
		info "    $(dirname "$LOG_FILE")    (logs)"
		# Containers and shims first, while the pause process still lets us into their
		# namespace: then nookd, finding no shim, also stops the pause process and the link.
		if [ -n "$pause" ]; then
			kill_namespace "$pause"
		fi
	fi
	if systemd_user_running; then
		if systemctl --user cat "$UNIT_NAME" >/dev/null 2>&1; then
			systemctl --user disable --now "$UNIT_NAME" >/dev/null 2>&1 || systemctl --user stop "$UNIT_NAME" || true
			info "Stopped and disabled $UNIT_NAME."
		fi
	else
		warn "no running \`systemd --user\`: only removing the unit file"
	fi
	if [ -f "$UNIT_FILE" ]; then
		rm -f "$UNIT_FILE"
		info "Removed $UNIT_FILE."
	else
		info "No unit at $UNIT_FILE."
	fi
	if systemd_user_running; then
		systemctl --user daemon-reload
		systemctl --user reset-failed "$UNIT_NAME" >/dev/null 2>&1 || true
	fi
	if [ "$purge" = 0 ]; then
		# name only what is there
		[ -d "$root" ] && kept="images, containers and snapshots in $root"
		if [ -d "$CONFIG_DIR" ]; then
			kept="${kept:+$kept, and }the configuration in $CONFIG_DIR"
		fi
		[ -n "$kept" ] && info "Kept $kept."
		uninstall_leftovers
		pause=$(live_pid "$state/pause.pid" nook-pause || true)
		if [ -n "$pause" ]; then
			info "Containers still run in nook's namespaces (pause process $pause); \`$PROG uninstall --purge\` stops them and deletes all data."
		fi
		return 0
	fi
	pause=$(live_pid "$state/pause.pid" nook-pause || true)
	if [ -n "$pause" ]; then
		# nookd was not running (or kept it): delete the data from inside the namespace that
		# owns its files, then end the namespace
		kill_namespace "$pause"
		remove_tree "$root" "$pause"
		kill_namespace "$pause" all
		info "Stopped nook's namespaces (pause process $pause)."
	else
		remove_tree "$root" ""
	fi
	link=$(live_pid "$state/netlink.pid" 'slirp4netns|pasta|passt.*' || true)
	if [ -n "$link" ]; then
		kill "$link" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			[ -d "/proc/$link" ] || break
			sleep 0.1
		done
		kill -9 "$link" 2>/dev/null || true
		info "Stopped the network link (pid $link)."
	fi
	remove_tree "$state" ""
	rm -rf "$CONFIG_DIR" "$(dirname "$LOG_FILE")"
	info "Purged."
	uninstall_leftovers
}

# ---------------------------------------------------------------------------------------------
# delegate (root)

DELEGATE_UNIT="nook-cgroup-delegate@.service"
DELEGATE_COPY=/usr/local/lib/nook/nook-rootless-setuptool.sh

# Makes a v1 cgroup directory; a new cpuset cgroup gets its parent's CPUs and memory nodes
# (it has none, and takes no process, until then).
v1_mkdir() {
	local dir=$1 f
	[ -d "$dir" ] || mkdir "$dir"
	if [ -f "$dir/cpuset.cpus" ]; then
		for f in cpuset.cpus cpuset.mems; do
			if [ -z "$(tr -d '[:space:]' <"$dir/$f")" ]; then
				cat "$(dirname "$dir")/$f" >"$dir/$f"
			fi
		done
	fi
}

delegate_v1() {
	local user=$1 uid=$2 gid=$3 h sub=nook/user-$2 done_list="" f
	while read -r h; do
		[ -n "$h" ] || continue
		v1_mkdir "$h/nook"
		v1_mkdir "$h/$sub"
		chown "$uid:$gid" "$h/$sub"
		for f in cgroup.procs tasks cgroup.clone_children cgroup.subtree_control cgroup.threads; do
			if [ -e "$h/$sub/$f" ]; then chown "$uid:$gid" "$h/$sub/$f"; fi
		done
		done_list="$done_list $(v1_controllers "$h")"
	done < <(v1_hierarchies)
	[ -n "$done_list" ] || die "no cgroup v1 hierarchy is mounted under /sys/fs/cgroup: nothing to delegate"
	info "[OK] delegated to $user in /sys/fs/cgroup/*/$sub:$done_list"
}

# Makes the v1 subtrees again at boot (cgroupfs is empty after a reboot), where systemd runs.
delegate_v1_at_boot() {
	local user=$1 unit_dir=/etc/systemd/system
	if ! command -v systemctl >/dev/null 2>&1 || [ ! -d "$unit_dir" ]; then
		info "[WARN] no systemd here: run '$PROG delegate $user' again after each boot (e.g. from /etc/rc.local)"
		return 0
	fi
	mkdir -p "$(dirname "$DELEGATE_COPY")"
	if [ "$(readlink -f "$SCRIPT_DIR/$PROG")" != "$(readlink -f "$DELEGATE_COPY")" ]; then
		install -m 0755 "$SCRIPT_DIR/$PROG" "$DELEGATE_COPY"
	fi
	cat >"$unit_dir/$DELEGATE_UNIT" <<UNIT
# Written by $PROG delegate: gives user %i a cgroup v1 subtree in every hierarchy for nook.
[Unit]
Description=Delegate cgroup v1 controllers to %i for nook
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$DELEGATE_COPY delegate --no-boot-unit %i

[Install]
WantedBy=multi-user.target
UNIT
	if systemctl enable "nook-cgroup-delegate@$user.service" >/dev/null 2>&1; then
		info "[OK] made again at boot: $unit_dir/$DELEGATE_UNIT, enabled for $user"
	else
		info "[WARN] wrote $unit_dir/$DELEGATE_UNIT but could not enable it -> systemctl enable nook-cgroup-delegate@$user.service"
	fi
}

delegate_v2() {
	local user=$1 uid=$2 dir=/etc/systemd/system/user@.service.d
	if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
		die "cgroup v2 without systemd: delegate a cgroup to $user by hand (mkdir one under /sys/fs/cgroup, write +cpu +cpuset +io +memory +pids to its parent's cgroup.subtree_control, chown -R $user it) and run nookd in it"
	fi
	mkdir -p "$dir"
	printf '# Written by %s delegate: cgroup controllers for rootless containers (nook).\n[Service]\nDelegate=cpu cpuset io memory pids\n' "$PROG" >"$dir/delegate.conf"
	if systemctl daemon-reload; then
		info "[OK] delegated cpu cpuset io memory pids to every user's systemd ($dir/delegate.conf); $user: log in again (or sudo systemctl restart user@$uid.service) for it to apply"
	else
		die "wrote $dir/delegate.conf, but systemctl daemon-reload failed"
	fi
}

cmd_delegate() {
	local user=$1 boot_unit=$2 uid gid
	[ "$USER_ID" = 0 ] || die "delegate changes cgroups that root owns: run it as root (sudo $PROG delegate ${user:-$USER_NAME})"
	[ -n "$user" ] || die "delegate needs the user: $PROG delegate USER"
	uid=$(id -u "$user" 2>/dev/null) || die "no such user: $user"
	gid=$(id -g "$user")
	[ "$uid" != 0 ] || die "delegate is for an unprivileged user, not root"
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		delegate_v2 "$user" "$uid"
	else
		delegate_v1 "$user" "$uid" "$gid"
		if [ "$boot_unit" = 1 ]; then delegate_v1_at_boot "$user"; fi
	fi
}

# ---------------------------------------------------------------------------------------------
# main

# nsenter: runs "$@" inside the running nookd's user and mount namespaces (those of its pause
# process, found through `nook info`), with CONTAINERD_ADDRESS pointing at nook's socket.
cmd_nsenter() {
	[ $# -gt 0 ] || die "nsenter needs a command: $PROG nsenter -- CMD..."
	local addr nook pid
	addr=${ADDRESS_OPT:-${NOOK_ADDRESS:-$(nook_address)}}
	nook=$(find_nook "$(find_nookd || printf '%s\n' /nonexistent/nookd)") ||
		die "the nook CLI is not in PATH or ~/.local/bin"
	pid=$("$nook" --address "$addr" info --format json 2>/dev/null |
		sed -n 's/.*"pause_pid": *"\{0,1\}\([0-9][0-9]*\).*/\1/p' | head -n 1)
	[ -n "$pid" ] || die "no nookd answers at $addr: start it (\`$PROG install\` or \`nookd\`), or give --address"
	command -v nsenter >/dev/null 2>&1 || die "nsenter is missing: install util-linux"
	export CONTAINERD_ADDRESS=$addr NOOK_ADDRESS=$addr
	exec nsenter --preserve-credentials -U -m -t "$pid" -- "$@"
}

main() {
	local cmd="" purge=0 target="" boot_unit=1
	while [ $# -gt 0 ]; do
		case "$1" in
		-h | --help | help)
			usage
			return 0
			;;
		--nookd)
			[ $# -ge 2 ] || die "--nookd needs a path"
			NOOKD_OPT=$2
			shift
			;;
		--nookd=*) NOOKD_OPT=${1#--nookd=} ;;
		--force) FORCE=1 ;;
		--purge) purge=1 ;;
		--address)
			[ $# -ge 2 ] || die "--address needs a path"
			ADDRESS_OPT=$2
			shift
			;;
		--address=*) ADDRESS_OPT=${1#--address=} ;;
		nsenter)
			[ -z "$cmd" ] || die "one command at a time (got $cmd and $1); see --help"
			shift
			[ "${1:-}" != -- ] || shift
			cmd_nsenter "$@"
			;;
		--no-boot-unit) boot_unit=0 ;;
		check | install | uninstall | delegate)
			[ -z "$cmd" ] || die "one command at a time (got $cmd and $1); see --help"
			cmd=$1
			;;
		*)
			if [ "$cmd" = delegate ] && [ -z "$target" ] && [ "${1#-}" = "$1" ]; then
				target=$1
			else
				die "unknown argument '$1'; see --help"
			fi
			;;
		esac
		shift
	done
	[ -n "$cmd" ] || {
		usage >&2
		exit 2
	}
	if [ "$cmd" = delegate ]; then
		cmd_delegate "$target" "$boot_unit"
		return
	fi
	if [ "$USER_ID" = 0 ]; then
		die "do not run this as root: nook is rootless; run it as the user who will use nook (for that user's systemd --user)"
	fi
	if [ "$purge" = 1 ] && [ "$cmd" != uninstall ]; then
		die "--purge goes with uninstall"
	fi
	case "$cmd" in
	check) cmd_check ;;
	install) cmd_install ;;
	uninstall) cmd_uninstall "$purge" ;;
	esac
}

main "$@"
