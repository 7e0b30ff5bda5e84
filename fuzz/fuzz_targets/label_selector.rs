//! The label-selector parser (`labelSelector`, `--default-label-selector`) on arbitrary text.
//! Nothing may panic; an error says where it went wrong; a parsed selector's canonical `Display`
//! form parses back to an equal selector and is a fixed point; matching never panics.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use trustmount::domain::{LabelSelector, SelectorOperator};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let selector = match LabelSelector::parse(&text) {
        Ok(selector) => selector,
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("position"), "{text:?}: {message}");
            return;
        }
    };
    let canonical = selector.to_string();
    let again = LabelSelector::parse(&canonical).unwrap_or_else(|e| panic!("{text:?} → {canonical:?}: {e}"));
    assert_eq!(again, selector, "{text:?} → {canonical:?}");
    assert_eq!(again.to_string(), canonical, "the canonical form is a fixed point");
    assert_eq!(selector.is_empty(), canonical.is_empty());

    // Labels that give each requirement's key a value it names (or none), so matching walks
    // every operator; the answer itself depends on how requirements on one key combine.
    let mut labels = BTreeMap::new();
    for requirement in selector.requirements() {
        let value = match requirement.operator() {
            SelectorOperator::Exists => Some(String::new()),
            SelectorOperator::DoesNotExist => None,
            SelectorOperator::Equals(v) | SelectorOperator::NotEquals(v) => Some(v.clone()),
            SelectorOperator::In(values) | SelectorOperator::NotIn(values) => values.first().cloned(),
        };
        if let Some(value) = value {
            labels.insert(requirement.key().to_owned(), value);
        }
    }
    let _ = selector.matches(&labels);
    let _ = selector.matches(&BTreeMap::new());
});
