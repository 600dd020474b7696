//! The `wardhook` binary: everything lives in the library; see `wardhook::cli`.

/// mimalloc instead of the system allocator: the intake path allocates per request (HTTP
/// parsing, JSON, sealing, the access line), and glibc's malloc/free were about 8 % of the
/// server's CPU under load (docs/BENCHMARKS.md §14–§15).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wardhook::cli::main()
}
