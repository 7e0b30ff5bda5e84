//! The one integration test binary: every former tests/*.rs file is a module of `fast` or `slow`,
//! and all of them share tests/support (so each support item is used by some test). `tests/run
//! fast` runs `fast::…` (with the unit and doc tests), `tests/run slow` runs `slow::…`.

#[path = "../support/mod.rs"]
mod support;

mod fast;
mod slow;
