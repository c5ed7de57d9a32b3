//! The snapshot subsystem (see DESIGN.md).
