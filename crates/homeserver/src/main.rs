//! The `homeserver` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    homeserver::cli::run()
}
