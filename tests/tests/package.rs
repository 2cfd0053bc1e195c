//! The Linux package as people install it: `tauri build --bundles deb` (the debug profile here,
//! to reuse the tests' build; `scripts/package` makes the release one) makes a .deb with the
//! right metadata, a desktop entry that hands `confer://` links to the app, icons, and a binary
//! that, unpacked from the package, starts and shows its home page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use confer_tests::desktop::{AppHome, Driver, Xvfb};
use confer_tests::without_cargo_test_env;

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let output = Command::new("dpkg-deb").args(args).arg(deb).output().expect("dpkg-deb runs");
    assert!(output.status.success(), "dpkg-deb {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_deb_installs_an_app_that_starts_and_takes_confer_links() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    // target/debug/deps/<test> → target
    let exe = std::env::current_exe().unwrap();
    let target: PathBuf = exe.ancestors().nth(3).unwrap().to_owned();
    // No package of an earlier build may stand in for this one.
    let bundle = target.join("debug/bundle/deb");
    let _ = std::fs::remove_dir_all(&bundle);
    // The Tauri CLI is one of the UI's packages (scripts/test installs them).
    let mut build = without_cargo_test_env(Command::new(root.join("ui/node_modules/.bin/tauri")));
    build
        .args(["build", "--debug", "--bundles", "deb", "--ci"])
        // The cargo build `tauri build` runs, made the one the test run's binaries come from
        // (`confer_tests::binary`): with other features it would compile Tauri, webrtc and the
        // app a second way, and the tests after this one would compile them back.
        .args(["--", "--workspace", "--tests", "--features", "confer-desktop/custom-protocol"])
        .current_dir(root.join("src-tauri"))
        .env("CARGO_TARGET_DIR", &target);
    let status = build.status().expect("the Tauri CLI runs");
    assert!(status.success(), "tauri build --bundles deb failed");
    let deb = std::fs::read_dir(&bundle)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}", bundle.display()));
    eprintln!("{} ({} KiB)", deb.display(), std::fs::metadata(&deb).unwrap().len() / 1024);

    let control = dpkg_deb(&["--field"], &deb);
    eprintln!("{control}");
    assert!(control.contains("Package: confer"), "{control}");
    assert!(control.contains("Version: 0.1.0"), "{control}");
    let depends = control.lines().find_map(|l| l.strip_prefix("Depends: ")).unwrap_or_default();
    // Every shared library the binary loads comes from a package it depends on (webview, GTK,
    // ALSA for cpal, D-Bus for the single-instance handover).
    for package in ["libwebkit2gtk-4.1-0", "libgtk-3-0", "libasound2", "libdbus-1-3"] {
        assert!(depends.split(", ").any(|d| d == package), "{package} is a dependency: {depends}");
    }
    let contents = dpkg_deb(&["--contents"], &deb);
    for path in [
        "usr/bin/confer-desktop",
        "usr/share/applications/Confer.desktop",
        "hicolor/128x128/apps/confer-desktop.png",
    ] {
        assert!(contents.contains(path), "{path} is in the package:\n{contents}");
    }

    // dpkg would install it here: its dependencies are satisfiable (nothing is installed).
    let dry = Command::new("dpkg").args(["--dry-run", "--install"]).arg(&deb).output().unwrap();
    assert!(
        dry.status.success(),
        "dpkg --dry-run --install: {}{}",
        String::from_utf8_lossy(&dry.stdout),
        String::from_utf8_lossy(&dry.stderr)
    );

    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(unpacked.path()).status().unwrap();
    assert!(status.success());
    let desktop =
        std::fs::read_to_string(unpacked.path().join("usr/share/applications/Confer.desktop")).unwrap();
    eprintln!("{desktop}");
    assert!(desktop.contains("Exec=confer-desktop %u"), "a clicked link reaches the app: {desktop}");
    assert!(desktop.contains("MimeType=x-scheme-handler/confer"), "the app takes confer:// links: {desktop}");

    // The packaged binary carries its page: it starts, and the home page answers.
    let app = unpacked.path().join("usr/bin/confer-desktop");
    let xvfb = Xvfb::start();
    let home = AppHome::new();
    let driver = Driver::start(&app, &["--automation"], &xvfb.display, &home);
    driver.find("[data-testid=new-meeting]", Duration::from_secs(30));
}
