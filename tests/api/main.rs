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
mod fhir_keys;
mod file_modes;
mod foundation;
mod helpers;
mod hl7v2;
mod intake;
mod listener_safety;
mod maintenance;
mod multinode;
mod operations;
mod outside_numbers;
mod postgres;
mod realtime;
mod reload;
mod unauthenticated;
mod verify_tls;
