//! The image subsystem (see DESIGN.md).
