//! tej-backup (being built).
