//! Command handlers: each turns parsed arguments into a library call and renders the result.

pub mod backup;
pub mod calendar;
pub mod config;
pub mod db;
pub mod host;
pub mod redis;
pub mod rotate;
pub mod schedule;
pub mod services;
pub mod tls;
