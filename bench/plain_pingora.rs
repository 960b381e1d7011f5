//! A plain Pingora reverse proxy with no gateway logic: the floor Portcullis is measured
//! against in `bench/run.sh`'s saturation phase. Same Pingora version, allocator (jemalloc),
//! release profile (fat LTO) and thread count as Portcullis; it adds one request header, as
//! the nginx and Envoy rows do, and keeps upstream connections alive through Pingora's pool.
//!
//! Run: `cargo run --release --example plain_pingora -- --listen 127.0.0.1:18084
//!       --upstream 127.0.0.1:18080`

use async_trait::async_trait;
use clap::Parser;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// The backend, host:port (plain HTTP).
    #[arg(long)]
    upstream: String,
}

struct PlainProxy {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for PlainProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        upstream_request.insert_header("X-Remote-User", "nobody")?;
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        PlainProxy {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever()
}
