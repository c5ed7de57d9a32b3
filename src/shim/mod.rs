//! The shim subsystem (see DESIGN.md).
