//! The committed BPF objects are their sources': `scripts/build-bpf.sh` (Debian's
//! clang) builds `bpf/drop_reasons.bpf.c` and `bpf/node_pass.bpf.c` again into a
//! temporary directory, and the bytes must be the committed objects', which the exporter
//! embeds. A change to a C source without rebuilding its object fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_committed_object_is_built_from_the_committed_source() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("np-bpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = Command::new("bash")
        .arg(format!("{root}/scripts/build-bpf.sh"))
        .arg(&dir)
        .output()
        .expect("bash");
    assert!(
        run.status.success(),
        "scripts/build-bpf.sh failed (needs clang, llvm and libbpf-dev: scripts/test.sh installs them): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in ["drop_reasons", "node_pass"] {
        let built = std::fs::read(dir.join(format!("{name}.bpf.o"))).unwrap();
        let committed = std::fs::read(format!("{root}/bpf/{name}.bpf.o")).unwrap();
        assert!(
            built == committed,
            "bpf/{name}.bpf.o is not what bpf/{name}.bpf.c builds to: run scripts/build-bpf.sh and commit the object ({} bytes built, {} committed)",
            built.len(),
            committed.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
