//! Integration tests: the real server over real TLS on loopback, one test binary.

mod config_table;
mod examples;
mod foundation;
mod helpers;
mod intake;
