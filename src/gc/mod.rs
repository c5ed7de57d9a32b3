//! Garbage collection and leases (containerd's model): mark from roots — images, containers,
//! live leases, resources labelled `containerd.io/gc.root` — through references, and sweep
//! the rest.

pub mod check;
pub mod collect;
pub mod scheduler;
mod state;

pub use state::GcState;
