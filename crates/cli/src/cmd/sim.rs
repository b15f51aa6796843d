//! `iommuctl sim`: what an IOMMU does, walked through on the software model.

use anyhow::Context;

use crate::exit::Exit;
use crate::output::Outcome;

/// `iommuctl sim`: exit 0 when every step behaved, 4 otherwise.
pub fn run() -> anyhow::Result<Outcome> {
    let report = iommu_sim::tour().context("running the software IOMMU tour")?;
    let exit = if report.ok { Exit::Ok } else { Exit::Failed };
    Ok(Outcome::report(report).with_exit(exit))
}
