//! The `wardhook` binary: everything lives in the library; see `wardhook::cli`.

fn main() -> std::process::ExitCode {
    wardhook::cli::main()
}
