//! The integration tests of iommu-bench, one binary: real `lspci` output of generated trees read back
//! as hex dumps (`lspci_dump`) and as `-vvvnn` text (`lspci_text`).

mod util;

mod lspci_dump;
mod lspci_text;
