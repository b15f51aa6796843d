//! iommuctl's integration tests, one binary (`cargo test -p iommuctl --test it`): the built `iommuctl` run
//! on snapshots built in code, lab snapshots and lspci dumps, and `--root` trees; hostile input and
//! concurrent processes included. `util` holds what the modules share.

mod util;

mod bind_root;
mod cdi;
mod check;
mod cli;
mod concurrency;
mod config;
mod diff;
mod export;
mod graph;
mod hostile;
mod lspci;
mod probe;
mod shell;
mod snapshots;
mod validators;
mod whatif;
