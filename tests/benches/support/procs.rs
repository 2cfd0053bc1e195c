//! What the app benchmarks read of a process tree from /proc: CPU time, memory, children; and the
//! frames each tile drew, from the page.

// Each bench includes this file as its own module and uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;

use confer_tests::desktop::Driver;

/// Every process and its parent.
pub(crate) fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// `root`'s descendants (not `root`).
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let parents = parents();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, p)| **p == parent).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

pub(crate) fn name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

pub(crate) use confer_tests::cpu_seconds;

/// Proportional set size, MiB (shared pages divided among the processes sharing them, so the
/// sum over processes is the memory they use together).
pub(crate) fn pss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

pub(crate) fn drawn(driver: &Driver) -> HashMap<String, f64> {
    let tiles = driver.execute("return window.__confer.tiles()", &[]);
    tiles
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["drawn"].as_f64().unwrap()))
        .collect()
}
