//! Compiling where an app's traffic goes: its upstreams (resolved once, no DNS on the
//! request path), TLS towards them, timeouts and passive health.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Compiler<'_> {
    pub(super) fn upstreams(&mut self, file: &FilePolicy) -> Vec<UpstreamTarget> {
        if file.upstreams.get_ref().is_empty() {
            self.error(&file.upstreams, "upstreams must list at least one backend");
        }
        let sni_override = file.upstream_tls.sni.as_ref().map(|s| s.get_ref().clone());
        let mut targets = Vec::new();
        for up in file.upstreams.get_ref() {
            let weight = match &up.weight {
                Some(w) if !(1..=100).contains(w.get_ref()) => {
                    self.error(w, "weight must be between 1 and 100");
                    1
                }
                Some(w) => *w.get_ref(),
                None => 1,
            };
            let raw = up.url.get_ref();
            let url = match url::Url::parse(raw) {
                Ok(u) => u,
                Err(e) => {
                    self.error(&up.url, format!("upstream url `{raw}` is invalid: {e}"));
                    continue;
                }
            };
            let tls = match url.scheme() {
                "http" => false,
                "https" => true,
                other => {
                    self.error(
                        &up.url,
                        format!("upstream scheme `{other}` is not supported (use http or https)"),
                    );
                    continue;
                }
            };
            if !url.username().is_empty() || url.password().is_some() {
                self.error(&up.url, "upstream url must not carry credentials");
                continue;
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                self.error(
                    &up.url,
                    "upstream url must be scheme://host[:port] only (no path or query)",
                );
                continue;
            }
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                self.error(&up.url, "upstream url needs a host");
                continue;
            };
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let verify = file
                .upstream_tls
                .verify
                .as_ref()
                .is_none_or(|v| *v.get_ref());
            if tls && verify && sni_override.is_none() && host.parse::<std::net::IpAddr>().is_ok() {
                // Certificates are checked against a DNS name (and SNI may not be an IP,
                // RFC 6066 §3), so an IP upstream needs the name its certificate carries.
                self.error(&up.url, format!("https upstream `{raw}` is an IP address: set [upstream_tls] sni to the name in its certificate"));
                continue;
            }
            // Resolved once here: request handling must never block on DNS.
            let addr = match (host.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next())
            {
                Ok(Some(a)) => a,
                Ok(None) | Err(_) => {
                    self.error(
                        &up.url,
                        format!("upstream host `{host}` cannot be resolved"),
                    );
                    continue;
                }
            };
            targets.push(UpstreamTarget {
                url: raw.clone(),
                addr,
                tls,
                host_header: match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or(&host)),
                    None => url.host_str().unwrap_or(&host).to_string(),
                },
                sni: sni_override.clone().unwrap_or(host),
                weight,
            });
        }
        targets
    }

    pub(super) fn upstream_tls(&mut self, tls: &FileUpstreamTls, base: &Path) -> UpstreamTls {
        if let Some(sni) = &tls.sni {
            // An empty SNI would make the TLS connector skip certificate checks altogether.
            if parse_host_pattern(sni.get_ref())
                .map_or(true, |h| matches!(h, HostPattern::Wildcard(_)))
            {
                self.error(sni, format!("sni `{}` must be a host name", sni.get_ref()));
            }
        }
        let verify = tls.verify.as_ref().is_none_or(|v| *v.get_ref());
        if let Some(v) = &tls.verify {
            if !v.get_ref() {
                self.warning(v, "upstream certificate verification is off: anyone on the path can impersonate the backend");
            }
        }
        let ca =
            tls.ca_file
                .as_ref()
                .and_then(|f| match load_ca_file(&resolve(base, f.get_ref())) {
                    Ok((_, certs)) => Some(certs),
                    Err(message) => {
                        self.error(f, message);
                        None
                    }
                });
        UpstreamTls { verify, ca }
    }
}
