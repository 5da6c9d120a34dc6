//! The `orders-api` binary: parse the command line, dispatch.

fn main() -> std::process::ExitCode {
    orders_api::cli::main()
}
