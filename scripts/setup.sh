#!/usr/bin/env bash
# Idempotent set-up for the atomic-write lab on Debian 12 (bookworm).
#
#   scripts/setup.sh          install packages, fetch the default kernel, build `lab`
#   scripts/setup.sh run      ... then run the default testcases (results/)
#   scripts/setup.sh test     ... then run the test suite (installs chromium for it)
#
# Everything the lab downloads lives under $LAB_CACHE (default ~/.cache/lab).
# The host's apt sources only gain bookworm-backports (for QEMU 10); kernels from
# Debian's newer suites are fetched through a private apt configuration so the
# host never sees sid.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${LAB_CACHE:-$HOME/.cache/lab}
mode=${1:-setup}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 3; }

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- 1. apt source for bookworm-backports -----------------------------------
bpo=/etc/apt/sources.list.d/lab-bookworm-backports.sources
need_update=0
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding bookworm-backports apt source ($bpo)"
  sudo_ tee "$bpo" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_update=1
fi

# --- 2. packages ---------------------------------------------------------------
# Host tools: QEMU 10 (backports), image building, SSH keys, the guest's userland
# (busybox, dropbear, xfsprogs, fio are copied into the guest image from here),
# and what the Rust crates need to build (ssh2 -> libssl-dev, pkg-config).
pkgs=(qemu-system-x86 qemu-utils busybox-static dropbear-bin xfsprogs fio
      openssh-client cpio xz-utils zstd kmod libssl-dev pkg-config build-essential
      ca-certificates git
      flex bison bc libelf-dev ccache)   # kernel builds (lab run --series, lab bisect)
bpo_pkgs=(qemu-system-x86 qemu-utils)

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v; v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
  [ "${v:-0}" -ge 10 ]
}
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || ! qemu_ok; then
  if [ "$need_update" = 1 ] || [ ! -d /var/lib/apt/lists ] || \
     ! apt-cache policy qemu-system-x86 2>/dev/null | grep -q bookworm-backports; then
    log "apt-get update"
    sudo_ apt-get update -qq
  fi
  log "installing: ${missing[*]:-} (QEMU from bookworm-backports)"
  export DEBIAN_FRONTEND=noninteractive
  inst=()
  for p in "${pkgs[@]}"; do [[ " ${bpo_pkgs[*]} " == *" $p "* ]] || inst+=("$p"); done
  sudo_ apt-get install -y -qq --no-install-recommends "${inst[@]}" >/dev/null
  # -t lets QEMU's own dependencies (seabios, ipxe) come from backports too.
  sudo_ apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    "${bpo_pkgs[@]}" >/dev/null
  qemu_ok || die "QEMU >= 10 not installed after apt (check bookworm-backports)"
fi
log "QEMU: $(qemu-system-x86_64 --version | head -1)"

# --- 3. default kernel: newest Debian prebuilt cloud-amd64 7.x -----------------
# A private apt configuration: its own sources.list, lists and archives under
# the cache, so `apt-get download` sees another Debian suite without the host
# knowing about it. Usage: private_apt ARRAY "SUITE..." DIR (ARRAY gets the
# options).
private_apt() {
  local -n _opts=$1
  local suites=$2 dir=$3 suite
  mkdir -p "$dir"/{lists/partial,archives/partial,etc/preferences.d}
  for suite in $suites; do
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main"
  done > "$dir/etc/sources.list"
  _opts=(-o Dir::Etc::sourcelist="$dir/etc/sources.list"
         -o Dir::Etc::sourceparts=- -o Dir::Etc::preferencesparts="$dir/etc/preferences.d"
         -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir"
         -o Dir::Cache::archives="$dir/archives" -o Dir::State::status=/dev/null
         -o APT::Architecture=amd64 -o Debug::NoLocking=1)
}

apt_dir=$cache/apt
mkdir -p "$cache/kernels"
private_apt papt sid "$apt_dir"

default_link=$cache/kernels/default
if [ -n "${LAB_REFRESH_KERNEL:-}" ] || [ ! -e "$default_link/vmlinuz" ]; then
  log "resolving the newest Debian cloud-amd64 7.x kernel (private apt config: $apt_dir)"
  apt-get "${papt[@]}" update -qq 2>&1 | grep -v 'unsandboxed' >&2 || true
  # Debian splits a kernel into linux-binary-<abi>-cloud-amd64 (vmlinuz),
  # linux-modules-<abi>-cloud-amd64 and linux-base-<abi>-cloud-amd64 (config,
  # System.map); <abi> looks like 7.2.13+deb14.
  abi=$(apt-cache "${papt[@]}" pkgnames linux-binary-7. 2>/dev/null \
        | sed -nE 's/^linux-binary-(7\.[0-9][^-]*)-cloud-amd64$/\1/p' | sort -V | tail -1)
  [ -n "$abi" ] || die "no linux-binary-7.x-cloud-amd64 package found in Debian sid"
  kdir=$cache/kernels/$abi-cloud-amd64
  if [ ! -e "$kdir/vmlinuz" ]; then
    debs=()
    for part in binary modules base; do
      if apt-cache "${papt[@]}" show "linux-$part-$abi-cloud-amd64" >/dev/null 2>&1; then
        debs+=("linux-$part-$abi-cloud-amd64")
      fi
    done
    dl=$(mktemp -d "$cache/dl.XXXXXX")
    log "downloading ${debs[*]}"
    (cd "$dl" && apt-get "${papt[@]}" download "${debs[@]}" >/dev/null 2>&1) \
      || die "apt-get download ${debs[*]} failed"
    rm -rf "$kdir.tmp"; mkdir -p "$kdir.tmp/root"
    for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$kdir.tmp/root"; done
    # Newer Debian kernels keep vmlinuz beside their modules in
    # /usr/lib/modules/<release>/; older ones in /boot.
    moddir=$(cd "$kdir.tmp" && ls -d root/usr/lib/modules/*/ root/lib/modules/*/ 2>/dev/null | head -1 || true)
    moddir=${moddir%/}
    [ -n "$moddir" ] || die "no modules directory in ${debs[*]}"
    release=${moddir##*/}
    vmlinuz=$(cd "$kdir.tmp" && ls "$moddir/vmlinuz" root/boot/vmlinuz-"$release" 2>/dev/null | head -1 || true)
    [ -n "$vmlinuz" ] || die "no vmlinuz in ${debs[*]}"
    # modules.dep is normally made at install time; the image builder needs it.
    depmod -b "$kdir.tmp/${moddir%/lib/modules/*}" "$release" \
      || die "depmod failed for $release"
    ln -s "$vmlinuz" "$kdir.tmp/vmlinuz"
    ln -s "$moddir" "$kdir.tmp/modules"
    echo "$release" > "$kdir.tmp/release"
    printf '%s\n' "${debs[@]}" > "$kdir.tmp/packages"
    rm -rf "$kdir"; mv "$kdir.tmp" "$kdir"; rm -rf "$dl"
  fi
  ln -sfn "$(basename "$kdir")" "$default_link"
fi
log "default kernel: $(readlink "$default_link")"

# --- 3b. default kernel source: linux-source of the default kernel's release ----
# The tarball `lab run --series` and `lab bisect` build from when no
# --kernel-tree is given. The lab unpacks it into a git repository on first
# use (~/.cache/lab/kernel/trees/). Pinned on purpose to the upstream release
# of the default kernel above (7.2.13 today, from the same sid lists), not
# to the newest linux-source in any suite (trixie-backports has a newer 7.3):
# a lab-built base is then the same release as the kernel `lab run` boots,
# and the series in patches/ are made and tested on that release.
src_dir=$cache/src
mkdir -p "$src_dir"
if [ -n "${LAB_REFRESH_KERNEL:-}" ] || [ ! -e "$src_dir/default" ]; then
  apt-get "${papt[@]}" update -qq 2>&1 | grep -v 'unsandboxed' >&2 || true
  krel=$(cat "$default_link/release")          # 7.2.13+deb14-cloud-amd64
  kver=${krel%%+*}; kver=${kver%%-*}              # 7.2.13
  spkg=linux-source-${kver%.*}                    # linux-source-7.2
  sver=$(apt-cache "${papt[@]}" show "$spkg" 2>/dev/null | sed -n 's/^Version: //p' \
         | grep -E "^${kver//./\\.}-" | sort -V | tail -1 || true)
  [ -n "$sver" ] || die "no $spkg $kver-* in Debian sid (the default kernel is $krel)"
  tarball=$src_dir/$spkg-${sver}.tar.xz
  if [ ! -s "$tarball" ]; then
    dl=$(mktemp -d "$cache/dl.XXXXXX")
    log "downloading $spkg $sver (~160 MB)"
    (cd "$dl" && apt-get "${papt[@]}" download "$spkg" >/dev/null 2>&1) \
      || die "apt-get download $spkg failed"
    dpkg-deb --fsys-tarfile "$dl"/*.deb \
      | tar -x --wildcards --to-stdout './usr/src/linux-source-*.tar.xz' > "$tarball.tmp" \
      || die "no linux-source tarball in $spkg"
    mv "$tarball.tmp" "$tarball"; rm -rf "$dl"
  fi
  ln -sfn "$(basename "$tarball")" "$src_dir/default"
  echo "Debian $spkg $sver (the default kernel's release)" > "$src_dir/default.describe"
fi
log "default kernel source: $(cat "$src_dir/default.describe") ($src_dir/default)"

# --- 4. newer guest tools: fio and xfs_io from Debian trixie -------------------
# Debian 12's fio (3.33) and xfsprogs (6.1) predate RWF_ATOMIC support
# (fio atomic=1 needs 3.38, xfs_io pwrite -A 6.12). trixie's binaries need
# trixie's glibc, so they are unpacked with their libraries into a private
# root; the guest image runs them through that root's own loader. Only the
# testcases that ask for them (`guest_tools:`) get an image with them.
tools_root=$cache/tools/trixie
if [ ! -x "$tools_root/root/usr/bin/fio" ] || [ ! -x "$tools_root/root/usr/sbin/xfs_io" ]; then
  tapt_dir=$cache/apt-trixie
  private_apt tapt trixie "$tapt_dir"
  log "fetching fio and xfsprogs from trixie with their libraries (private apt config: $tapt_dir)"
  apt-get "${tapt[@]}" update -qq 2>&1 | grep -v 'unsandboxed' >&2 || true
  # The library closure; interpreters and system packages the binaries never
  # load are left out (python3 is only for fio's helper scripts).
  pkgs_trixie=$(apt-cache "${tapt[@]}" depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances fio xfsprogs 2>/dev/null \
    | grep -v '^ ' | grep -v '^<' | sort -u \
    | grep -vE '^(python3.*|libpython3.*|perl.*|libperl.*|init-system-helpers|debconf.*|dpkg|sensible-utils|adduser|passwd|mount|util-linux.*|lsb-base|sysvinit-utils|tzdata|media-types|readline-common|libpam.*|login.*|mime-support|netbase|base-files|base-passwd|coreutils|debianutils|bash|dash|diffutils|findutils|grep|gzip|hostname|ncurses-.*|sed|tar|install-info|usrmerge|libicu76)$')
  dl=$(mktemp -d "$cache/dl.XXXXXX")
  (cd "$dl" && apt-get "${tapt[@]}" download $pkgs_trixie >/dev/null 2>&1) \
    || die "apt-get download from trixie failed for: $pkgs_trixie"
  rm -rf "$tools_root.tmp"; mkdir -p "$tools_root.tmp/root"
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$tools_root.tmp/root"; done
  [ -x "$tools_root.tmp/root/usr/bin/fio" ] || die "no fio in the trixie packages"
  rm -rf "$tools_root"; mv "$tools_root.tmp" "$tools_root"; rm -rf "$dl"
fi
log "guest tools: fio and xfs_io from trixie in $tools_root"

# --- 5. QEMU >= 10.2 for namespace atomics, in a private root --------------------
# Linux 7.x takes the atomic write unit only from the namespace (NAWUPF), which
# QEMU can set from 10.2 on (nvme-ns atomic.nawupf, ...); bookworm-backports
# stops at 10.0. Debian trixie-backports carries QEMU 11.x built for trixie's
# glibc, so its exact dependency closure (apt's own resolver against an empty
# dpkg status: nothing on the host is assumed) is unpacked into a private
# root, and a wrapper runs it through that root's loader with that root's
# libraries, firmware and modules. The system QEMU stays as it is; `lab` uses
# this one when it works (LAB_QEMU overrides). LAB_REFRESH_QEMU=1 re-resolves.
qemu_suite=trixie-backports
qemu_dir=$cache/qemu/$qemu_suite
# Usage: lab_qemu_ok WRAPPER: runs, is >= 10.2 and has nvme-ns atomic.nawupf.
lab_qemu_ok() {
  local v major minor
  v=$("$1" --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)
  read -r major minor <<<"${v:-0 0}"
  { [ "$major" -gt 10 ] || { [ "$major" -eq 10 ] && [ "$minor" -ge 2 ]; }; } || return 1
  "$1" -nodefaults -machine none -device nvme-ns,help 2>&1 | grep -q 'atomic\.nawupf'
}
if [ -n "${LAB_REFRESH_QEMU:-}" ] || ! lab_qemu_ok "$qemu_dir/qemu-system-x86_64"; then
  t0=$SECONDS
  qapt_dir=$cache/apt-$qemu_suite
  private_apt qapt "trixie $qemu_suite" "$qapt_dir"
  log "fetching QEMU from Debian $qemu_suite with its libraries (private apt config: $qapt_dir)"
  apt-get "${qapt[@]}" update -qq 2>&1 | grep -v 'unsandboxed' >&2 || true
  # "Inst PKG (VERSION SUITE [ARCH])" lines of a simulated install on an
  # empty system: every package QEMU needs, at the version apt chose.
  closure=$(apt-get "${qapt[@]}" -s -t "$qemu_suite" install --no-install-recommends \
              qemu-system-x86 2>/dev/null | sed -nE 's/^Inst ([^ ]+) \(([^ ]+) .*/\1=\2/p')
  [ -n "$closure" ] || die "apt cannot resolve qemu-system-x86 from $qemu_suite"
  dl=$(mktemp -d "$cache/dl.XXXXXX")
  (cd "$dl" && apt-get "${qapt[@]}" download $closure >/dev/null 2>&1) \
    || die "apt-get download from $qemu_suite failed for: $(echo $closure)"
  rm -rf "$qemu_dir.tmp"; mkdir -p "$qemu_dir.tmp/root/lab-bin"
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$qemu_dir.tmp/root"; done
  [ -x "$qemu_dir.tmp/root/usr/bin/qemu-system-x86_64" ] || die "no qemu-system-x86_64 in the $qemu_suite packages"
  # The loader under QEMU's name, so the process is called qemu-system-x86
  # (ps, pgrep, /proc/PID/stat) like the system one.
  ln -s ../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$qemu_dir.tmp/root/lab-bin/qemu-system-x86_64"
  # -L: the firmware (SeaBIOS, option ROMs) of this root, not the host's;
  # QEMU_MODULE_DIR: its own modules (a 10.0 module would not load in 11).
  cat > "$qemu_dir.tmp/qemu-system-x86_64" <<'WRAP'
#!/bin/sh
# QEMU from Debian trixie-backports in a private root (scripts/setup.sh), run
# through that root's own loader and libraries.
r=$(dirname "$(readlink -f "$0")")/root
export QEMU_MODULE_DIR="$r/usr/lib/x86_64-linux-gnu/qemu"
exec "$r/lab-bin/qemu-system-x86_64" --library-path "$r/usr/lib/x86_64-linux-gnu" \
  "$r/usr/bin/qemu-system-x86_64" -L "$r/usr/share/qemu" -L "$r/usr/share/seabios" "$@"
WRAP
  chmod 755 "$qemu_dir.tmp/qemu-system-x86_64"
  printf '%s\n' $closure > "$qemu_dir.tmp/packages"
  lab_qemu_ok "$qemu_dir.tmp/qemu-system-x86_64" \
    || die "QEMU from $qemu_suite does not run here: $("$qemu_dir.tmp/qemu-system-x86_64" --version 2>&1 | head -3)"
  rm -rf "$qemu_dir"; mv "$qemu_dir.tmp" "$qemu_dir"; rm -rf "$dl"
  log "lab QEMU unpacked in $((SECONDS - t0)) s ($(du -sh "$qemu_dir" | cut -f1))"
fi
ln -sfn "$qemu_suite" "$cache/qemu/current"
log "lab QEMU: $("$cache/qemu/current/qemu-system-x86_64" --version | head -1) in $qemu_dir (system QEMU unchanged)"

# --- 6. the lab itself ------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
log "cargo build --release"
(cd "$here" && cargo build --release -q)
# The guest agent is linked statically so it runs in the busybox initramfs.
(cd "$here" && RUSTFLAGS="-C target-feature=+crt-static" \
   cargo build --release -q -p lab-guest --target x86_64-unknown-linux-gnu \
   --target-dir "$here/target/guest")

case "$mode" in
  setup) log "done. Try: target/release/lab doctor" ;;
  run)   exec "$here/target/release/lab" run ;;
  test)
    cd "$here"
    # Only the tests need a browser: lab/cli/tests/report.rs opens the HTML
    # reports in headless Chromium (Debian's own package, no snap, no npm).
    if ! command -v chromium >/dev/null; then
      log "installing chromium (headless, for the HTML report tests)"
      export DEBIAN_FRONTEND=noninteractive
      sudo_ apt-get install -y -qq --no-install-recommends chromium >/dev/null || {
        sudo_ apt-get update -qq
        sudo_ apt-get install -y -qq --no-install-recommends chromium >/dev/null
      }
      command -v chromium >/dev/null || die "chromium not installed after apt"
    fi
    log "cargo fmt --check, clippy -D warnings"
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -q -- -D warnings
    # Integration tests boot real VMs; one at a time keeps TCG boots fast on
    # two cores and the timings in their logs meaningful.
    log "cargo test (unit, property and real-VM integration tests)"
    exec cargo test --release --workspace -- --test-threads=1 ;;
  *) die "unknown mode '$mode' (setup|run|test)" ;;
esac
