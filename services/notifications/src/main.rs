//! The notifications service binary.
fn main() {}
