//! The gc subsystem (see DESIGN.md).
