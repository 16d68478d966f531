//! tej-db (being built).

pub mod redis;
