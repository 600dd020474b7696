//! Integration tests: the real server over real TLS on loopback, one test binary.

mod adapters_flow;
mod admin;
mod audit_cli;
mod browser;
mod canary;
mod cli_send;
mod config_table;
mod crash;
mod dispatch;
mod examples;
mod file_modes;
mod foundation;
mod helpers;
mod intake;
mod multinode;
mod operations;
mod postgres;
mod realtime;
mod reload;
mod verify_tls;
