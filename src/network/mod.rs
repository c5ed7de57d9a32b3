//! The network subsystem (see DESIGN.md).
