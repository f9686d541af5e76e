//! The op names a crate's source can record on the tape: what each `Backward` impl's
//! `fn name(&self) -> &'static str` returns, read from the source text, so that a test binary can
//! assert that every one of them went through a gradient check
//! (`tapegrad_autograd::gradchecked_ops`).

use std::collections::BTreeSet;
use std::path::Path;

const SIGNATURE: &str = "fn name(&self) -> &'static str";

/// The first string literal at the start of `s` (after whitespace).
fn literal(s: &str) -> Option<String> {
    let rest = s.trim().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The names the `Backward` impls of one source file return: a literal, the `name: "..."`
/// literals of a struct that stores its name (`self.name`), or a macro's `$label`, read from each
/// invocation of that macro.
///
/// # Errors
/// A message naming `file` for any other form, for a `fn name` with another signature, and for a
/// `Backward` impl without a `fn name` this reader sees, so that a new way of naming an op cannot
/// slip past a coverage test.
pub fn op_names(file: &str, src: &str) -> Result<Vec<String>, String> {
    if src.matches("fn name(").count() != src.matches(SIGNATURE).count() {
        return Err(format!("{file}: a `fn name` with a signature this reader cannot read"));
    }
    if src.matches("Backward<T> for").count() != src.matches(SIGNATURE).count() {
        return Err(format!("{file}: every Backward impl must have one `{SIGNATURE}`"));
    }
    let mut names = vec![];
    for (at, _) in src.match_indices(SIGNATURE) {
        let body = src[at..]
            .find('{')
            .map(|open| &src[at + open + 1..])
            .and_then(|rest| rest.find('}').map(|close| &rest[..close]))
            .ok_or_else(|| format!("{file}: a `fn name` without a closed body"))?;
        if let Some(name) = literal(body) {
            names.push(name);
        } else if body.trim() == "self.name" {
            let stored: Vec<String> =
                src.match_indices("name: \"").filter_map(|(i, _)| literal(&src[i + 6..])).collect();
            if stored.is_empty() {
                return Err(format!("{file}: an op named by `self.name` but no `name: \"...\"` literal"));
            }
            names.extend(stored);
        } else if body.trim().starts_with('$') {
            let defined =
                src[..at].rfind("macro_rules! ").ok_or_else(|| format!("{file}: a `$label` outside a macro_rules"))?;
            let rest = &src[defined + "macro_rules! ".len()..];
            let macro_name = &rest[..rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len())];
            let call = format!("{macro_name}!(");
            let mut calls = vec![];
            for (i, _) in src.match_indices(&call) {
                // The first literal of the call, skipping its doc comments.
                let args: String = src[i + call.len()..]
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let label = args.find('"').and_then(|q| literal(&args[q..]));
                calls.push(label.ok_or_else(|| format!("{file}: a call of {macro_name}! without a label literal"))?);
            }
            if calls.is_empty() {
                return Err(format!("{file}: macro {macro_name} names ops but is never invoked"));
            }
            names.extend(calls);
        } else {
            return Err(format!("{file}: an op name this reader cannot read: `{}`", body.trim()));
        }
    }
    Ok(names)
}

/// The op names of every `.rs` file under `dir`, recursively.
///
/// # Panics
/// When `dir` cannot be read, or [`op_names`] fails on a file: a coverage test that cannot read
/// its crate's ops is broken.
pub fn backward_op_names(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
        if path.is_dir() {
            names.extend(backward_op_names(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.extend(op_names(&path.display().to_string(), &src).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    names
}

/// The functions `src` defines (the names after each `fn `), each with the text that follows its
/// name (so that a caller can tell `name(` from `name<T>(` or `name()`): what the coverage tests
/// read to check that their list of checks names every check of their file.
pub fn fn_names(src: &str) -> Vec<(&str, &str)> {
    src.match_indices("fn ")
        .map(|(i, _)| {
            let rest = &src[i + 3..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coverage test built on the reader would pass vacuously if it missed a way of naming:
    /// check it on each form.
    #[test]
    fn reads_every_form() {
        let src = r#"
            impl<T: Float> Backward<T> for A { fn name(&self) -> &'static str { "alpha" } }
            struct S { name: &'static str }
            impl<T: Float> Backward<T> for S<T> { fn name(&self) -> &'static str { self.name } }
            fn make() { S { name: "beta" }; S { name: "gamma" }; }
            macro_rules! m { ($n:ident, $label:literal) => {
                impl<T: Float> Backward<T> for $n<T> { fn name(&self) -> &'static str { $label } }
            } }
            m!(
                /// a "quoted" doc
                D, "delta");
            m!(E, "epsilon");
        "#;
        assert_eq!(op_names("test", src).unwrap(), ["alpha", "beta", "gamma", "delta", "epsilon"]);
    }

    /// Each form the reader cannot read is its own error, naming the file.
    #[test]
    fn rejects_what_it_cannot_read() {
        let err = |src: &str| op_names("f.rs", src).unwrap_err();
        let unreadable = r#"impl<T: Float> Backward<T> for A { fn name(&self) -> &'static str { NAME } }"#;
        assert_eq!(err(unreadable), "f.rs: an op name this reader cannot read: `NAME`");
        let signature = r#"impl<T: Float> Backward<T> for A { fn name(&self) -> String { "a".into() } }"#;
        assert_eq!(err(signature), "f.rs: a `fn name` with a signature this reader cannot read");
        let unnamed = r#"impl<T: Float> Backward<T> for A { fn backward() {} }"#;
        assert!(err(unnamed).starts_with("f.rs: every Backward impl must have one"));
        let unstored = r#"impl<T: Float> Backward<T> for A { fn name(&self) -> &'static str { self.name } }"#;
        assert!(err(unstored).contains("no `name: \"...\"` literal"));
        let uncalled = r#"macro_rules! m { () => {
            impl<T: Float> Backward<T> for A { fn name(&self) -> &'static str { $label } } } }"#;
        assert_eq!(err(uncalled), "f.rs: macro m names ops but is never invoked");
    }
}
