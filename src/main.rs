//! The `bootfactory` binary: see `bootfactory --help`.

fn main() -> std::process::ExitCode {
    bootfactory::cli::main()
}
