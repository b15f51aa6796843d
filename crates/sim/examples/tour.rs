//! `cargo run -p iommu-sim --example tour [-- --json]`: walks through translation, bounce buffers,
//! coalescing and isolation on the simulated IOMMU and prints what happened and the counters.
//! Exits 0 when every mechanism behaved as claimed, 1 otherwise.

use std::process::ExitCode;

fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let report = match iommu_sim::tour() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tour: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tour: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        println!("{report}");
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
