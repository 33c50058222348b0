//! Integration tests: the real server in-process on port 0, real TLS, real HTTP clients, real
//! SQLite and PostgreSQL. One binary, so the crate links once.

mod helpers;

mod access;
mod api_keys;
mod attacks;
mod audit;
mod connections;
mod console;
mod console_browser;
mod console_more;
mod cursors;
mod durability;
mod faults;
mod foundation;
mod idempotency;
mod isolation;
mod oauth;
mod operator;
mod organizations;
mod stall;
mod throttling;
mod tokens;
mod users;
