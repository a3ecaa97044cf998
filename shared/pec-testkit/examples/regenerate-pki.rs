//! Regenerates the committed TEST-ONLY PKI under `shared/pec-testkit/pki/` with fresh keys.
//!
//! ```sh
//! cargo run -p pec-testkit --example regenerate-pki
//! ```
//!
//! Every golden file signed with the test PKI changes afterwards: regenerate those too
//! (`UPDATE_GOLDEN=1 cargo test ...`) and review the diff.

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pki");
    for (name, contents) in pec_testkit::pki::generate() {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}
