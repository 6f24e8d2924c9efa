//! wsgate-loadtest: the load generator (scenarios steady, ramp, churn, expiry, abuse) is
//! tracked as its own piece of work; this binary only reserves the crate in the workspace.

fn main() -> std::process::ExitCode {
    eprintln!("wsgate-loadtest: no scenarios are implemented yet; see loadtest/README.md");
    std::process::ExitCode::from(2)
}
