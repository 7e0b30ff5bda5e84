//! The volume-attribute parser on a map built from the input: one `key=value` per line (the
//! last of a repeated key wins, as in a map). Nothing may panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use trustmount::sources::cluster::parse_attributes;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let attributes: HashMap<String, String> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    if let Ok((spec, _pod)) = parse_attributes(&attributes) {
        let _ = spec.digest();
    }
});
