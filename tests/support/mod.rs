//! Shared test support. Each test binary includes it with `mod support;`.
#![allow(dead_code)]

pub mod ns;
