#!/usr/bin/env bash
# Builds ferrox-agent as a fully static x86_64-unknown-linux-musl binary (the ramdisk's /init)
# and prints its path on stdout (everything else goes to stderr).
#
# libblkid is the agent's only C library dependency. Debian ships no musl build of it, so this
# script builds libblkid.a alone from Debian's own util-linux source with musl-gcc and hands it
# to agent/sys/build.rs through FERROX_BLKID_STATIC_DIR.
#
# Every step is cached and skipped when already done:
#   - the rustup target and the Debian packages (musl-tools, dpkg-dev, make);
#   - a deb-src entry mirroring the existing bookworm deb entries (only if none exists);
#   - the util-linux source and libblkid.a under $FERROX_CACHE (default /var/cache/ferrox),
#     keyed by the installed util-linux version;
#   - cargo's own incremental build in target/x86_64-unknown-linux-musl/release/.
# Run as root on Debian bookworm (apt). Set FERROX_CACHE to put the cache elsewhere.
# Usage: hack/build-static-agent.sh [--check]   (--check: also run it in an empty chroot)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
CACHE=${FERROX_CACHE:-/var/cache/ferrox}
log() { echo "build-static-agent: $*" >&2; }

# One build at a time (tests call this script in parallel): the cache and the stripped copy
# are shared.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-static-agent.lock"
flock 9

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
command -v cargo >/dev/null || { log "cargo (Rust stable) is required"; exit 1; }

# 1. Rust target.
if ! rustup target list --installed | grep -qx "$TARGET"; then
  log "adding rust target $TARGET"
  rustup target add "$TARGET" >&2
fi

# 2. Debian packages: musl-gcc, dpkg-source (for apt-get source), make for util-linux.
pkgs=(musl-tools dpkg-dev make gcc file)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

# 3. libblkid.a for musl, from the util-linux source matching the installed util-linux.
ul_version=$(dpkg-query -W -f='${Version}' util-linux 2>/dev/null || true)
[ -n "$ul_version" ] || ul_version=$(apt-cache policy util-linux | awk '/Candidate:/ {print $2}')
blkid_dir="$CACHE/libblkid-musl-$ul_version"
if [ ! -f "$blkid_dir/libblkid.a" ]; then
  # A deb-src entry is needed for `apt-get source`. Mirror the deb entries that exist (deb822
  # .sources files and one-line .list files) rather than guessing a mirror.
  if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      /etc/apt/sources.list.d/*.sources; then
    log "adding deb-src entries mirroring the deb entries"
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      grep -q 'debian' "$f" || continue
      sed -E 's/^Types:.*/Types: deb-src/' "$f" >"/etc/apt/sources.list.d/ferrox-src-$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      grep -qE '^deb .*debian' "$f" || continue
      grep -E '^deb .*debian' "$f" | sed -E 's/^deb /deb-src /' >>/etc/apt/sources.list.d/ferrox-src.list
    done
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  fi

  src_root="$CACHE/src/util-linux-$ul_version"
  if [ ! -x "$src_root/util-linux-${ul_version%%-*}/configure" ]; then
    log "fetching util-linux $ul_version source into $src_root"
    rm -rf "$src_root" && mkdir -p "$src_root"
    (cd "$src_root" && apt-get source -q "util-linux=$ul_version" >&2)
  fi
  src=$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'util-linux-*' | head -1)
  [ -x "$src/configure" ] || { log "no configure script in $src"; exit 1; }
  # Debian's patches touch configure.ac (an option for tty programs we do not build), which
  # makes make(1) want to rerun autotools. The shipped configure is fine for libblkid: mark the
  # generated files newer than their sources instead of pulling in autoconf/automake/libtool.
  touch "$src/aclocal.m4"; sleep 1
  touch "$src/configure" "$src/config.h.in"
  find "$src" -name Makefile.in -exec touch {} +

  # musl ships no kernel headers; expose only linux/, asm/ and asm-generic/ from the system
  # (putting all of /usr/include on the path would mix glibc's headers into musl's).
  kinc="$CACHE/kernel-headers"
  if [ ! -e "$kinc/linux" ]; then
    mkdir -p "$kinc"
    ln -sfn /usr/include/linux "$kinc/linux"
    ln -sfn /usr/include/asm-generic "$kinc/asm-generic"
    ln -sfn /usr/include/x86_64-linux-gnu/asm "$kinc/asm"
  fi

  build="$CACHE/build/util-linux-$ul_version"
  rm -rf "$build" && mkdir -p "$build"
  log "building libblkid.a with musl-gcc in $build"
  (
    cd "$build"
    CC=musl-gcc CFLAGS="-O2 -fPIC -idirafter $kinc" "$src/configure" \
      --host=x86_64-linux-musl --disable-all-programs --enable-libblkid \
      --disable-shared --enable-static --disable-nls --disable-bash-completion \
      --disable-asciidoc --disable-poman --without-python --without-udev --without-systemd \
      --without-readline --without-ncurses --without-ncursesw --without-tinfo \
      --without-cap-ng --without-libz --without-libmagic --without-selinux --without-audit \
      --without-btrfs --without-econf >"$build/configure.log" 2>&1 ||
      { tail -30 "$build/configure.log" >&2; exit 1; }
    make -j"$(nproc)" libblkid.la >"$build/make.log" 2>&1 || { tail -30 "$build/make.log" >&2; exit 1; }
  )
  mkdir -p "$blkid_dir.tmp"
  cp "$build/.libs/libblkid.a" "$blkid_dir.tmp/"
  rm -rf "$blkid_dir" && mv "$blkid_dir.tmp" "$blkid_dir"
fi
log "libblkid.a: $blkid_dir/libblkid.a"

# 4. The agent. musl-gcc compiles the C parts of other crates (lzma-sys, zstd-sys, ring).
# relocation-model=static: Rust's musl target links static-pie by default, which `file` reports
# as "static-pie linked"; a plain static executable is what the ramdisk wants and is smaller.
log "cargo build --release --target $TARGET -p ferrox-agent"
FERROX_BLKID_STATIC_DIR="$blkid_dir" \
  CC_x86_64_unknown_linux_musl=musl-gcc \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --target "$TARGET" -p ferrox-agent >&2

# The ramdisk gets a stripped copy (≈6 MB instead of ≈36 MB with line tables); the unstripped
# binary stays in target/ for symbolizing backtraces. Copied only when the build changed it.
built="$PWD/target/$TARGET/release/ferrox-agent"
bin="$PWD/target/static/ferrox-agent"
if [ ! -f "$bin" ] || [ "$built" -nt "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  strip -o "$bin.tmp" "$built" && mv "$bin.tmp" "$bin"
fi
file -b "$bin" | grep -q 'statically linked' ||
  { log "$bin is not statically linked: $(file -b "$bin")"; exit 1; }

# --check: prove it needs no libc: run `inspect` in a chroot holding nothing but the binary
# (and /proc, /sys mounted). Needs root.
if [ "${1:-}" = "--check" ]; then
  root=$(mktemp -d)
  cleanup() {
    umount "$root/proc" 2>/dev/null || true
    umount -R "$root/sys" 2>/dev/null || true
    rm -rf "$root"
  }
  trap cleanup EXIT
  cp "$bin" "$root/ferrox-agent"
  mkdir "$root/proc" "$root/sys"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --make-rslave "$root/sys"
  chroot "$root" /ferrox-agent inspect >"$root/inventory.json" ||
    { log "check: inspect failed in an empty chroot"; exit 1; }
  grep -q '"nics"' "$root/inventory.json" || { log "check: no inventory"; exit 1; }
  log "check: $(file -b "$bin" | cut -d, -f1-4); inspect ran in a chroot with no libc"
fi
echo "$bin"
