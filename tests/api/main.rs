//! Integration tests: the real server over real TLS on loopback, one test binary.

mod config_table;
mod foundation;
mod helpers;
