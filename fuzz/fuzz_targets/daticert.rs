//! The daticert parser on arbitrary bytes: must never panic; whatever it reads and the strict
//! emitter accepts must read back identically (emit → parse is the identity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec_core::daticert;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = daticert::parse(data) else {
        return;
    };
    for i in &parsed.issues {
        let _ = i.to_string();
    }
    if let Ok(xml) = parsed.daticert.to_xml() {
        let back = daticert::parse(&xml).expect("what we emit parses");
        assert_eq!(back.issues, vec![], "what we emit has no issue");
        assert_eq!(back.daticert, parsed.daticert, "emit then parse is the identity");
        assert_eq!(back.daticert.to_xml().ok(), Some(xml), "emission is deterministic");
    }
});
