//! `gen-sysfs`: writes a synthetic, kernel-shaped sysfs/procfs tree for benchmarking.
//!
//! ```text
//! gen-sysfs --functions N --out DIR [--seed S]
//! gen-sysfs --functions N --model-only [--seed S]
//! ```
//!
//! The IOMMU groups written are the ones `iommu_groups::predict` computes for the generated model, so the
//! tree holds what the kernel would have produced. `--model-only` writes nothing: it builds the model and
//! times `Topology::new` and `predict` on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use iommu_bench::{generate, sysfs::write_tree};
use iommu_groups::{predict, RuleSet, Topology};

const USAGE: &str = "usage: gen-sysfs --functions N (--out DIR | --model-only) [--seed S]";

struct Args {
    functions: usize,
    out: Option<PathBuf>,
    seed: u64,
    model_only: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut functions = None;
    let mut out = None;
    let mut seed = 1;
    let mut model_only = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--functions" | "-n" => functions = Some(value("--functions")?.replace('_', "").parse()?),
            "--out" | "-o" => out = Some(PathBuf::from(value("--out")?)),
            "--seed" => seed = value("--seed")?.parse()?,
            "--model-only" => model_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let Some(functions) = functions else { bail!("--functions is required\n{USAGE}") };
    if out.is_none() && !model_only {
        bail!("--out or --model-only is required\n{USAGE}");
    }
    Ok(Args { functions, out, seed, model_only })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let t0 = Instant::now();
    let host = generate(args.functions, args.seed);
    let t_gen = t0.elapsed();
    let t1 = Instant::now();
    let topology = Topology::new(host.devices()).context("generated topology is inconsistent")?;
    let t_topo = t1.elapsed();
    let t2 = Instant::now();
    let prediction = predict(&topology, &host.platform(), RuleSet::Linux6);
    let t_pred = t2.elapsed();
    let mut domains: Vec<String> = host.domains.iter().take(4).map(|d| format!("{d:04x}")).collect();
    if host.domains.len() > 4 {
        domains.push(format!("... ({} in all)", host.domains.len()));
    }
    let mut roles: BTreeMap<String, usize> = BTreeMap::new();
    for f in &host.functions {
        *roles.entry(format!("{:?}", f.role)).or_default() += 1;
    }
    let roles: Vec<String> = roles.iter().map(|(r, n)| format!("{r} {n}")).collect();
    eprintln!(
        "gen-sysfs: {} functions ({}), {} groups, domains {}; generate {:.3}s, Topology::new {:.3}s, predict {:.3}s",
        host.functions.len(),
        roles.join(", "),
        prediction.groups.len(),
        domains.join(" "),
        t_gen.as_secs_f64(),
        t_topo.as_secs_f64(),
        t_pred.as_secs_f64()
    );
    if args.model_only {
        return Ok(());
    }
    let out = args.out.expect("checked in parse_args");
    let groups: Vec<(u32, Vec<_>)> = prediction.groups.iter().map(|g| (g.id, g.devices.clone())).collect();
    let t3 = Instant::now();
    let stats = write_tree(&host, &groups, &out).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("gen-sysfs: wrote {} ({} entries) in {:.2}s", out.display(), stats.entries, t3.elapsed().as_secs_f64());
    Ok(())
}
