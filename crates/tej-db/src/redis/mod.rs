//! Redis health and maintenance (being built).
