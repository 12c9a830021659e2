//! The wiki container's entrypoint: `wiki-boot [serve|schema|jobs]` (see the crate docs).

use std::process::ExitCode;

use shared::Env;
use wiki_boot::Command;

#[tokio::main]
async fn main() -> ExitCode {
    shared::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match Command::parse(&args) {
        Ok(command) => wiki_boot::run(command, &Env::from_process()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error_type = e.error_type(), error = %e, "wiki-boot stopped");
            ExitCode::FAILURE
        }
    }
}
