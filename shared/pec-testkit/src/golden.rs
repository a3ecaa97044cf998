//! The one golden-file harness (in the style of Stalwart's mail-parser test corpus).
//!
//! A corpus is a directory of expected files `<case>.<ext>`. A test produces `(case, actual
//! bytes)` pairs — directly ([`Corpus::check`]) or by mapping every input file `<case>.<in>` of
//! the same directory through a closure ([`Corpus::check_inputs`]) — and the harness compares
//! each with its expected file, byte for byte. Every problem is collected, then the test fails
//! once, listing:
//!
//! * a **different** file, with the first differing line (expected and actual);
//! * a **missing** expected file (a case without its file);
//! * a **stale** expected file (`<name>.<ext>` that no case produces);
//!
//! and the command that regenerates the corpus:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p <crate> --test <target>
//! ```
//!
//! With `UPDATE_GOLDEN` set (non-empty, not `0`) the harness writes what differs or is missing,
//! deletes stale `*.<ext>` files, prints what it did and passes: review the diff before
//! committing. Under CI ([`crate::prereq::on_ci`]) `UPDATE_GOLDEN` is refused, since a test that
//! rewrites its own expectations cannot fail.
//!
//! JSON outputs go through [`json`]: pretty-printed, keys sorted at every level, trailing newline.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A directory of expected files with one extension.
#[derive(Clone, Debug)]
pub struct Corpus {
    dir: PathBuf,
    ext: String,
}

impl Corpus {
    /// The corpus of `*.<ext>` files (`ext` without the dot, e.g. `"eml"`, `"json"`) in `dir`.
    pub fn new(dir: impl Into<PathBuf>, ext: &str) -> Self {
        Self {
            dir: dir.into(),
            ext: ext.trim_start_matches('.').to_string(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The expected file of `case`.
    pub fn path_of(&self, case: &str) -> PathBuf {
        self.dir.join(format!("{case}.{}", self.ext))
    }

    /// Compares every `(case, actual)` with `<dir>/<case>.<ext>` (see the module docs); panics
    /// listing every difference, missing and stale file. At least one case is required and case
    /// names must be unique plain file stems.
    #[track_caller]
    pub fn check<N, B>(&self, cases: impl IntoIterator<Item = (N, B)>)
    where
        N: Into<String>,
        B: AsRef<[u8]>,
    {
        self.run(cases, update_requested());
    }

    /// [`Corpus::check`] with the update decision passed in.
    #[track_caller]
    fn run<N, B>(&self, cases: impl IntoIterator<Item = (N, B)>, update: bool)
    where
        N: Into<String>,
        B: AsRef<[u8]>,
    {
        let cases: Vec<(String, B)> = cases.into_iter().map(|(n, b)| (n.into(), b)).collect();
        let mut names = BTreeSet::new();
        for (name, _) in &cases {
            assert!(
                !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
                "golden case name {name:?} is not a plain file stem"
            );
            assert!(
                names.insert(name.as_str()),
                "golden case {name:?} is given twice"
            );
        }
        assert!(
            !cases.is_empty(),
            "no golden case for {}",
            self.dir.display()
        );

        let mut failures = Vec::new();
        let mut updated = Vec::new();
        for (name, actual) in &cases {
            let (path, actual) = (self.path_of(name), actual.as_ref());
            match std::fs::read(&path) {
                Ok(expected) if expected == actual => {}
                Ok(_) | Err(_) if update => {
                    std::fs::create_dir_all(&self.dir)
                        .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.dir.display()));
                    std::fs::write(&path, actual)
                        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                    updated.push(format!("wrote {}", path.display()));
                }
                Ok(expected) => failures.push(format!(
                    "{}: differs from the output; {}",
                    path.display(),
                    first_difference(&expected, actual)
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => failures.push(format!(
                    "{}: missing (case {name:?} has no expected file)",
                    path.display()
                )),
                Err(e) => failures.push(format!("{}: cannot read: {e}", path.display())),
            }
        }
        for stale in self.files_with_ext(&self.ext) {
            if names.contains(stale.as_str()) {
                continue;
            }
            let path = self.path_of(&stale);
            if update {
                std::fs::remove_file(&path)
                    .unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
                updated.push(format!("removed stale {}", path.display()));
            } else {
                failures.push(format!(
                    "{}: stale (no case produces it; delete it or add its case)",
                    path.display()
                ));
            }
        }
        for line in &updated {
            eprintln!("UPDATE_GOLDEN: {line}");
        }
        assert!(
            failures.is_empty(),
            "golden corpus {}: {} problem(s)\n  {}\nIf the change is intended, regenerate and review the diff:\n  {}",
            self.dir.display(),
            failures.len(),
            failures.join("\n  "),
            regenerate_command()
        );
    }

    /// Maps every input file `<dir>/<case>.<input_ext>` (sorted) through `produce(case, bytes)`
    /// and checks the outputs against `<case>.<ext>` as [`Corpus::check`] does.
    #[track_caller]
    pub fn check_inputs(&self, input_ext: &str, mut produce: impl FnMut(&str, &[u8]) -> Vec<u8>) {
        let input_ext = input_ext.trim_start_matches('.');
        assert_ne!(
            input_ext, self.ext,
            "inputs and expected files need different extensions"
        );
        let cases: Vec<(String, Vec<u8>)> = self
            .files_with_ext(input_ext)
            .into_iter()
            .map(|case| {
                let path = self.dir.join(format!("{case}.{input_ext}"));
                let input = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let output = produce(&case, &input);
                (case, output)
            })
            .collect();
        self.check(cases);
    }

    /// Stems of the `*.<ext>` files of the directory, sorted (none when it does not exist).
    fn files_with_ext(&self, ext: &str) -> Vec<String> {
        let suffix = format!(".{ext}");
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut stems: Vec<String> = entries
            .map(|e| {
                e.unwrap_or_else(|e| panic!("cannot list {}: {e}", self.dir.display()))
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter_map(|name| name.strip_suffix(&suffix).map(str::to_string))
            .collect();
        stems.sort();
        stems
    }
}

/// `value` as golden JSON: pretty-printed, object keys sorted at every level (whatever the
/// serde_json features), trailing newline.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("the value serialises to JSON");
    let mut out = serde_json::to_vec_pretty(&sorted(value)).expect("JSON encodes");
    out.push(b'\n');
    out
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Whether `UPDATE_GOLDEN` asks for regeneration; refused under CI.
fn update_requested() -> bool {
    let requested = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !(requested && crate::prereq::on_ci()),
        "UPDATE_GOLDEN is refused under CI: regenerate locally and commit the reviewed files"
    );
    requested
}

/// Where two byte strings first differ, by line (1-based), with both lines.
fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let mut exp = expected.split(|b| *b == b'\n');
    let mut act = actual.split(|b| *b == b'\n');
    let mut line = 1usize;
    loop {
        match (exp.next(), act.next()) {
            (Some(e), Some(a)) if e == a => line += 1,
            (e, a) => {
                return format!(
                    "first different line {line}:\n      expected: {}\n      actual:   {}",
                    show(e),
                    show(a)
                );
            }
        }
    }
}

fn show(line: Option<&[u8]>) -> String {
    const MAX: usize = 160;
    match line {
        None => "(end of file)".to_string(),
        Some(l) => {
            let text = String::from_utf8_lossy(l);
            let mut shown: String = format!("{text:?}");
            if shown.chars().count() > MAX {
                shown = shown.chars().take(MAX).collect::<String>() + "…";
            }
            shown
        }
    }
}

/// `UPDATE_GOLDEN=1 cargo test -p <crate> [--test <target>]` for the running test binary.
fn regenerate_command() -> String {
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "<crate>".into());
    let target = std::env::args()
        .next()
        .and_then(|argv0| {
            Path::new(&argv0)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => stem,
        });
    match target {
        Some(t) if t != package.replace('-', "_") => {
            format!("UPDATE_GOLDEN=1 cargo test -p {package} --test {t}")
        }
        _ => format!("UPDATE_GOLDEN=1 cargo test -p {package}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_line() {
        let d = first_difference(b"a\nb\nc\n", b"a\nB\nc\n");
        assert!(d.starts_with("first different line 2:"), "{d}");
        assert!(d.contains("\"b\"") && d.contains("\"B\""), "{d}");
        let d = first_difference(b"a\n", b"a\nmore\n");
        assert!(d.contains("line 2") && d.contains("\"more\""), "{d}");
        let d = first_difference(b"a", b"");
        assert!(d.contains("line 1"), "{d}");
    }

    /// A fresh, empty directory under the system temp dir.
    fn scratch(name: &str) -> Corpus {
        let dir =
            std::env::temp_dir().join(format!("pec-testkit-golden-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Corpus::new(dir, "out")
    }

    fn failure(corpus: &Corpus, cases: Vec<(&str, &[u8])>) -> String {
        let err = std::panic::catch_unwind(|| corpus.run(cases, false)).expect_err("must fail");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn matching_corpus_passes() {
        let c = scratch("match");
        std::fs::write(c.path_of("a"), b"one\n").unwrap();
        c.run([("a", b"one\n")], false);
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn different_missing_and_stale_files_fail_together() {
        let c = scratch("fail");
        std::fs::write(c.path_of("a"), b"one\ntwo\n").unwrap();
        std::fs::write(c.path_of("old"), b"x").unwrap();
        std::fs::write(c.dir().join("notes.txt"), b"other extensions are ignored").unwrap();
        let msg = failure(&c, vec![("a", b"one\nTWO\n"), ("b", b"new")]);
        assert!(msg.contains("3 problem(s)"), "{msg}");
        assert!(
            msg.contains("a.out: differs") && msg.contains("first different line 2"),
            "{msg}"
        );
        assert!(msg.contains("b.out: missing"), "{msg}");
        assert!(msg.contains("old.out: stale"), "{msg}");
        assert!(
            msg.contains("UPDATE_GOLDEN=1 cargo test -p pec-testkit"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn update_writes_and_removes_stale_then_passes() {
        let c = scratch("update");
        std::fs::write(c.path_of("a"), b"old").unwrap();
        std::fs::write(c.path_of("stale"), b"x").unwrap();
        let cases: Vec<(&str, &[u8])> = vec![("a", b"new"), ("b", b"bee")];
        c.run(cases.clone(), true);
        assert_eq!(std::fs::read(c.path_of("a")).unwrap(), b"new");
        assert_eq!(std::fs::read(c.path_of("b")).unwrap(), b"bee");
        assert!(!c.path_of("stale").exists());
        c.run(cases, false);
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn inputs_beside_their_expected_files() {
        let c = scratch("inputs");
        std::fs::write(c.dir().join("x.in"), b"abc").unwrap();
        std::fs::write(c.path_of("x"), b"ABC").unwrap();
        c.check_inputs("in", |case, input| {
            assert_eq!(case, "x");
            input.to_ascii_uppercase()
        });
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    #[should_panic(expected = "given twice")]
    fn duplicate_cases_are_refused() {
        scratch("dup").run([("a", b""), ("a", b"")], false);
    }

    #[test]
    fn json_is_sorted_pretty_with_a_final_newline() {
        let v = serde_json::json!({"b": 1, "a": {"d": [{"z": 0, "y": 1}], "c": null}});
        let out = String::from_utf8(json(&v)).unwrap();
        assert_eq!(
            out,
            "{\n  \"a\": {\n    \"c\": null,\n    \"d\": [\n      {\n        \"y\": 1,\n        \"z\": 0\n      }\n    ]\n  },\n  \"b\": 1\n}\n"
        );
    }
}
