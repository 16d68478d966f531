//! tej-secrets (being built).
