//! tej-host (being built).
