# Sourced by scripts/run and scripts/test: installs what a fresh Debian/Ubuntu machine lacks.
# Idempotent; installs nothing that is already there.

set -euo pipefail

# System packages: a C and C++ compiler (ring, openh264), pkg-config, curl (scripts), openssl
# (tests compute reference values with it), nasm (openh264's assembly: crates/media/build.rs
# refuses to build the 3x slower encoder without it), cmake (the opus crate builds libopus).
CONFER_APT_PACKAGES=(build-essential pkg-config curl ca-certificates openssl nasm cmake)

confer_setup() {
    local missing=()
    for pkg in "${CONFER_APT_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "Installing system packages: ${missing[*]}" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! command -v cargo >/dev/null; then
        [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null; then
        echo "Rust is not installed: install rustup (https://rustup.rs), then run this again." >&2
        exit 1
    fi
    # rust-toolchain.toml pins 1.95.0. If rustup has that release only under the name
    # "stable", name it, instead of downloading it again.
    local pinned
    pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
    if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$pinned"; then
        if rustc +stable --version 2>/dev/null | grep -q " $pinned "; then
            rustup toolchain link "$pinned" "$(rustc +stable --print sysroot)"
        fi
    fi
}
