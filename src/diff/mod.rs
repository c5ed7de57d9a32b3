//! The diff subsystem (see DESIGN.md).
