//! `swappo-demo`: see `make demo` and `scripts/demo.sh`, which set its environment.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let config = swappo_demo::config::Config::parse();
    let ok = swappo_demo::run::run(config).await?;
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
