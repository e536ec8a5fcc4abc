//! Parts of the `outage-worker` command kept apart from its argument
//! handling: logging, operations (metrics, systemd, credentials), and the
//! shell completions and man page.

pub mod logging;
pub mod ops;
