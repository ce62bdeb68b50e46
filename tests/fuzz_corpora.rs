//! The fuzz corpora (`fuzz/corpus/TARGET/`) and the inputs of past findings
//! (`fuzz/regressions/TARGET/`), replayed through the same entry points as the fuzz
//! targets (`src/fuzzing.rs`) on the stable toolchain: a decoder change that panics
//! on an input the fuzzer once reached fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use netpressure_exporter::fuzzing::TARGETS;

#[test]
fn every_corpus_and_regression_input_decodes_without_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, entry) in TARGETS {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                assert_ne!(kind, "corpus", "fuzz/corpus/{name} is missing");
                continue;
            };
            for file in dir {
                let path = file.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                if let Err(panic) = std::panic::catch_unwind(|| entry(&bytes)) {
                    std::panic::resume_unwind(Box::new(format!("{}: {panic:?}", path.display())));
                }
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no input for {name}");
        eprintln!("{name}: {inputs} inputs");
    }
}
