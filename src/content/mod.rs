//! The content subsystem (see DESIGN.md).
