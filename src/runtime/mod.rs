//! The runtime subsystem (see DESIGN.md).
