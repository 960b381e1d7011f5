//! Compiling where an app's traffic goes: its upstreams (resolved once, no DNS on the
//! request path), TLS towards them, timeouts and passive health.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::upstream::PassiveHealth;

impl Compiler<'_> {
    /// `[health]`: passive ejection of upstreams that refuse connections.
    pub(super) fn passive_health(&mut self, health: &FileHealth) -> PassiveHealth {
        let mut passive_health = PassiveHealth::default();
        if let Some(n) = &health.eject_after {
            if !(1..=100).contains(n.get_ref()) {
                self.error(
                    n,
                    "[health] eject_after must be between 1 and 100 connect failures",
                );
            }
            passive_health.eject_after = *n.get_ref();
        }
        if let Some(d) = &health.eject_for {
            if d.get_ref().0.is_zero() || d.get_ref().0 > Duration::from_secs(3600) {
                self.error(d, "[health] eject_for must be above zero and at most 1h");
            }
            passive_health.eject_for = d.get_ref().0;
        }
        passive_health
    }

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

/// `[timeouts]`, each falling back to the gateway's.
pub(super) fn timeouts(file: &FileTimeouts, defaults: UpstreamTimeouts) -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: file.connect.map_or(defaults.connect, |d| d.0),
        read: file.read.map_or(defaults.read, |d| d.0),
        write: file.write.map_or(defaults.write, |d| d.0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD};
    use std::time::Duration;

    fn with_upstreams(list: &str) -> String {
        HEAD.replace("[{ url = \"http://127.0.0.1:9\" }]", list)
    }

    #[test]
    fn upstream_urls_become_targets_resolved_once() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&with_upstreams(
                "[{ url = \"http://127.0.0.1:8081\", weight = 3 }, { url = \"https://localhost:8443\" }]",
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let [plain, tls] = app.upstreams() else {
            panic!("two upstreams expected");
        };
        assert_eq!(
            (plain.addr.port(), plain.tls, plain.weight),
            (8081, false, 3)
        );
        assert_eq!(plain.host_header, "127.0.0.1:8081");
        assert!(tls.tls);
        assert_eq!(tls.sni, "localhost");
        assert_eq!(tls.weight, 1);
        assert!(app.upstream_tls().verify, "verification is on by default");
    }

    #[test]
    fn upstream_urls_that_could_mean_two_things_are_refused() {
        let fx = Fixture::new();
        for (list, needle) in [
            ("[]", "at least one backend"),
            ("[{ url = \"ftp://127.0.0.1\" }]", "scheme `ftp`"),
            ("[{ url = \"http://u:p@127.0.0.1\" }]", "credentials"),
            ("[{ url = \"http://127.0.0.1/app\" }]", "no path or query"),
            ("[{ url = \"https://127.0.0.1\" }]", "is an IP address"),
            (
                "[{ url = \"http://127.0.0.1\", weight = 0 }]",
                "weight must be between",
            ),
        ] {
            assert_mentions(&fx.errors(&with_upstreams(list)), needle);
        }
    }

    #[test]
    fn health_and_timeouts_override_the_defaults_within_bounds() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&format!(
                "{HEAD}[health]\neject_after = 5\neject_for = \"30s\"\n[timeouts]\nread = \"2m\"\n"
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(app.passive_health().eject_after, 5);
        assert_eq!(app.passive_health().eject_for, Duration::from_secs(30));
        assert_eq!(app.timeouts().read, Duration::from_secs(120));
        assert_eq!(app.timeouts().connect, fx.gateway.upstream_timeouts.connect);
        assert_mentions(
            &fx.errors(&format!("{HEAD}[health]\neject_after = 0\n")),
            "eject_after must be between 1 and 100",
        );
        assert_mentions(
            &fx.errors(&format!("{HEAD}[health]\neject_for = \"2h\"\n")),
            "eject_for must be above zero and at most 1h",
        );
    }

    #[test]
    fn turning_verification_off_is_allowed_but_warned_about() {
        let fx = Fixture::new();
        let (app, warnings) = fx
            .compile(&format!("{HEAD}[upstream_tls]\nverify = false\n"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!app.upstream_tls().verify);
        assert_mentions(&warnings, "verification is off");
    }
}
