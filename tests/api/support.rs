//! The test harness, apart from the tests: [`helpers`] (`TestApp`, backends, the
//! `both_backends!` macro), [`binary`] (the real binary as a child process) and [`faults`]
//! (TCP proxies that cut, stall or abandon connections).

pub mod binary;
pub mod faults;
pub mod helpers;
