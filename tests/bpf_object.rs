//! The committed BPF object is its source's: `scripts/build-bpf.sh` (Debian's clang)
//! builds `bpf/drop_reasons.bpf.c` again into a temporary file, and the bytes must be
//! the committed `bpf/drop_reasons.bpf.o`'s, which the exporter embeds. A change to the
//! C source without rebuilding the object fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_committed_object_is_built_from_the_committed_source() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("np-bpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("drop_reasons.bpf.o");
    let run = Command::new("bash")
        .arg(format!("{root}/scripts/build-bpf.sh"))
        .arg(&out)
        .output()
        .expect("bash");
    assert!(
        run.status.success(),
        "scripts/build-bpf.sh failed (needs clang, llvm and libbpf-dev: scripts/test.sh installs them): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let built = std::fs::read(&out).unwrap();
    let committed = std::fs::read(format!("{root}/bpf/drop_reasons.bpf.o")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        built == committed,
        "bpf/drop_reasons.bpf.o is not what bpf/drop_reasons.bpf.c builds to: run scripts/build-bpf.sh and commit the object ({} bytes built, {} committed)",
        built.len(),
        committed.len()
    );
}
