//! The `tailrace` binary: `serve` runs the server; `run`, `tail`, `job`, `store-test-results`
//! and `store-artifacts` are its clients.

mod artifacts;
mod check;
mod cli;
mod config;
mod keys;
mod serve;
mod store;
mod test_results;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tailrace: could not start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cli::dispatch(cli));
    // Do not wait for blocking tasks still parked on reads (e.g. a pty of a background process).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
