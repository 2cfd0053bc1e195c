//! openh264 compiles its x86 assembly with `nasm`; without it the build still succeeds but the
//! encoder silently runs about 3x slower. Refuse to build that way unless asked to.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=CONFER_ALLOW_SLOW_H264");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !matches!(arch.as_str(), "x86" | "x86_64") || std::env::var_os("CONFER_ALLOW_SLOW_H264").is_some() {
        return;
    }
    let nasm = std::env::var("NASM").unwrap_or_else(|_| "nasm".to_owned());
    if Command::new(&nasm).arg("-v").output().map(|o| o.status.success()).unwrap_or(false) {
        return;
    }
    panic!(
        "`nasm` was not found: openh264 would build without its assembly and encode about 3x slower.\n\
         Install it (Debian/Ubuntu: apt-get install nasm; scripts/test does this), or set \
         CONFER_ALLOW_SLOW_H264=1 to build the slow encoder anyway."
    );
}
