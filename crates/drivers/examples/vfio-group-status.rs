//! `vfio-group-status N`: opens /dev/vfio/N and prints VFIO_GROUP_GET_STATUS as one JSON line.
//! Exit 0 when the group is viable, 1 when not, 2 on error.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(n) = std::env::args().nth(1).and_then(|s| s.parse::<u32>().ok()) else {
        eprintln!("usage: vfio-group-status GROUP_NUMBER");
        return ExitCode::from(2);
    };
    match iommu_vfio::Group::open(n).and_then(|g| g.status()) {
        Ok(st) => {
            println!("{}", serde_json::json!({ "group": n, "viable": st.viable, "container_set": st.container_set }));
            ExitCode::from(if st.viable { 0 } else { 1 })
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("vfio-group-status: {msg}");
            ExitCode::from(2)
        }
    }
}
