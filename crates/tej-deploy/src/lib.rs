//! tej-deploy (being built).
