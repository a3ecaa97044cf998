//! The classifier and `split_signed` on arbitrary bytes: must never panic, and what they
//! return must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec_core::classify::classify;
use pec_core::signed::split_signed;

fuzz_target!(|data: &[u8]| {
    let c = classify(data);
    let _ = c.description();
    for a in &c.anomalies {
        let _ = a.to_string();
    }
    // The signed content is always a slice of the input.
    if let Some(s) = &c.signed {
        let start = s.content.as_ptr() as usize;
        let base = data.as_ptr() as usize;
        assert!(start >= base && start + s.content.len() <= base + data.len());
    }
    if let Ok(parts) = split_signed(data) {
        assert!(!parts.signature.is_empty());
        assert!(c.signed.is_some());
    }
    // A daticert that was read can be re-emitted or is refused cleanly.
    if let Some(d) = &c.daticert {
        let _ = d.to_xml();
    }
    // The embedded original is itself classifiable.
    if let Some(p) = &c.postacert {
        let _ = classify(p);
    }
});
