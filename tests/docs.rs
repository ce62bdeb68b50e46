//! The metric names are a contract: every family the code declares is documented in
//! docs/metrics.md, and nothing documented there is missing from the code.

use std::collections::BTreeSet;

fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("netpressure_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name.trim_end_matches('_').to_string());
    }
    out
}

#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    let root = env!("CARGO_MANIFEST_DIR");
    let code = std::fs::read_to_string(format!("{root}/src/metrics.rs")).unwrap_or_default();
    let docs = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap_or_default();
    // Every string literal that starts with the prefix is a family name.
    let declared: BTreeSet<String> = code
        .match_indices("\"netpressure_")
        .filter_map(|(i, _)| code[i + 1..].split('"').next())
        .map(str::to_string)
        .collect();
    assert!(
        declared.len() > 50,
        "parsed only {} names from src/metrics.rs",
        declared.len()
    );
    // A histogram's family is its `_bucket` series' name without the suffix.
    let declared: BTreeSet<String> = declared
        .iter()
        .flat_map(|n| [Some(n.clone()), n.strip_suffix("_bucket").map(str::to_string)])
        .flatten()
        .collect();
    let documented = names(&docs);
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(undocumented.is_empty(), "not in docs/metrics.md: {undocumented:?}");
    // Documented names that are not declared (allowing the `_peak` families, which are
    // declared like the others, and prose such as the `netpressure_` prefix itself).
    let unknown: Vec<_> = documented
        .iter()
        .filter(|n| n.as_str() != "netpressure" && !declared.contains(*n))
        .collect();
    assert!(unknown.is_empty(), "in docs/metrics.md but not declared: {unknown:?}");
}

/// The doctor's check ids the runbooks and the README point to exist, and every check
/// is listed in the README.
#[test]
fn doctor_check_ids_in_the_docs_are_real() {
    use netpressure_exporter::doctor::checks::CHECKS;
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for c in CHECKS {
        assert!(readme.contains(&format!("`{c}`")), "README does not list the check {c}");
    }
    let mut cited = 0;
    for e in std::fs::read_dir(format!("{root}/docs/runbooks")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let Some(line) = text.lines().find(|l| l.contains("netpressure_exporter doctor")) else {
            continue;
        };
        for id in line.split('`').skip(1).step_by(2).filter(|w| !w.contains(' ')) {
            assert!(CHECKS.contains(&id), "a runbook cites {id}, which is no check");
            cited += 1;
        }
    }
    assert!(cited >= CHECKS.len(), "{cited} citations");
}
