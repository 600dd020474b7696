//! An example CRM adapter (being written).
#![forbid(unsafe_code)]
