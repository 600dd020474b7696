//! The SQLite implementation of the store traits (see [`super::Store`]).

mod console;
mod health;
mod tokens;
