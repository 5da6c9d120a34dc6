//! The `orders-api` binary: parse the command line, dispatch.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    orders_api::cli::main()
}
