//! Portcullis: an identity-aware access gateway for legacy web apps, built on Pingora.
//!
//! A request's journey is read top to bottom in [`proxy`]; each step is a plain module:
//! [`hygiene`] (headers), [`routing`] (host + prefix → app), [`policy`] (normalised path,
//! rules, decision), [`pages`] (the gateway's own answers). [`config`] turns files into
//! validated values; [`gateway`] holds the shared state; [`server`] wires Pingora.

#![forbid(unsafe_code)]

/// jemalloc: per-thread caches and size classes without per-allocation headers; measured
/// against glibc malloc in `bench/optimisations.md`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bearer;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod directory;
pub mod discovery;
pub mod framing;
pub mod gateway;
pub mod health_checks;
pub mod hygiene;
pub mod idp;
pub mod intern;
pub mod kerberos;
pub mod lifecycle;
pub mod listeners;
pub mod logging;
pub mod login_limits;
pub mod metrics;
pub mod notify;
pub mod pages;
pub mod policy;
pub mod progress;
pub mod proxy;
pub mod refresh;
pub mod reload;
pub mod rewrite;
pub mod routing;
pub mod secret;
pub mod server;
pub mod session;
pub mod signals;
pub mod upstream;
