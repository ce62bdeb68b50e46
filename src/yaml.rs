//! YAML for the files the exporter reads (`--web.config.file`, kube-proxy's `--config`
//! for doctor), refusing aliases.
//!
//! yaml-rust2 expands an alias by copying what its anchor names, so a document of a few
//! hundred bytes whose aliases nest ("billion laughs") expands to gigabytes: the 4 MiB
//! bound on the file does not bound its value. Neither format has a use for anchors
//! and aliases (the exporter-toolkit's own examples have none), so a document with an
//! alias is refused before anything is built, in one pass over its events. Go's
//! yaml.v3, which the toolkit uses, refuses "excessive aliasing" instead; refusing every
//! alias is the simpler bound and costs users nothing they use.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::{Yaml, YamlLoader};

/// Parses `text` into its documents.
///
/// # Errors
/// The text is not YAML, or uses an alias (the message says where and what to do).
pub fn load(text: &str) -> Result<Vec<Yaml>, String> {
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((Event::Alias(_), mark)) => {
                return Err(format!(
                    "uses a YAML alias (line {}, column {}), which is not accepted here: write the value out in full",
                    mark.line(),
                    mark.col() + 1
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("not valid YAML: {e}")),
        }
    }
    YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_refused_before_they_expand() {
        // Nine levels of nine aliases: 9^9 (387 million) copies of "lol" once expanded;
        // yaml-rust2 builds them all (366 bytes of a web config got the exporter
        // OOM-killed at a 1 GiB limit). tests/common has the same bomb for the tests of
        // the binary.
        let mut bomb =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        assert!(bomb.len() < 400, "{}", bomb.len());
        let err = load(&bomb).unwrap_err();
        assert!(err.contains("alias (line 2, column"), "{err}");
        // A single alias is refused too, saying what to do.
        let err = load("x: &v 1\ny: *v\n").unwrap_err();
        assert!(err.contains("write the value out"), "{err}");
        // Anchors alone, and everything else, load.
        assert_eq!(load("x: &v 1\ny: 2\n").unwrap()[0]["y"].as_i64(), Some(2));
        assert!(load("a: [1, 2").unwrap_err().starts_with("not valid YAML"));
        assert!(load("").unwrap().is_empty());
    }
}
