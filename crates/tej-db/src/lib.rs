//! tej-db (being built).
