//! End-to-end tests live in `tests/tests/`. This library holds what they share that is not
//! test isolation (that is `swappo-testkit`).
#![forbid(unsafe_code)]

pub mod crd_reference;
