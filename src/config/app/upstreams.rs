//! Compiling where an app's traffic goes: its upstreams (resolved once, no DNS on the
//! request path), TLS towards them, timeouts and passive health.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::upstream::{ActiveHealth, PassiveHealth};

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

    /// `[health] path = …`: active checks, with OAG-like defaults (every 10s, 2s timeout,
    /// out after 3 failures, back after 2 successes, healthy on 200).
    pub(super) fn active_health(&mut self, health: &FileHealth) -> Option<ActiveHealth> {
        let stray = health
            .interval
            .as_ref()
            .map(Spanned::span)
            .or(health.timeout.as_ref().map(Spanned::span))
            .or(health.unhealthy_after.as_ref().map(Spanned::span))
            .or(health.healthy_after.as_ref().map(Spanned::span))
            .or(health.expect_status.first().map(Spanned::span));
        let Some(path) = &health.path else {
            if let Some(span) = stray {
                self.problems.push(self.src.error(
                    Some(span),
                    "[health] active check settings need `path` (the page to probe)",
                ));
            }
            return None;
        };
        let text = path.get_ref();
        if !text.starts_with('/') || text.chars().any(|c| c.is_control() || c == ' ') {
            self.error(
                path,
                "[health] path must start with `/` (it may carry a query)",
            );
        }
        let mut check = ActiveHealth {
            path: text.clone(),
            expect_status: vec![200],
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            unhealthy_after: 3,
            healthy_after: 2,
        };
        if !health.expect_status.is_empty() {
            check.expect_status = Vec::new();
            for status in &health.expect_status {
                if !(100..=599).contains(status.get_ref()) {
                    self.error(
                        status,
                        "[health] expect_status must be HTTP statuses (100-599)",
                    );
                }
                check.expect_status.push(*status.get_ref());
            }
        }
        if let Some(d) = &health.interval {
            if d.get_ref().0 < Duration::from_millis(100)
                || d.get_ref().0 > Duration::from_secs(3600)
            {
                self.error(d, "[health] interval must be between 100ms and 1h");
            }
            check.interval = d.get_ref().0;
        }
        if let Some(d) = &health.timeout {
            check.timeout = d.get_ref().0;
            if d.get_ref().0.is_zero() || d.get_ref().0 > check.interval {
                self.error(
                    d,
                    "[health] timeout must be above zero and no longer than interval",
                );
            }
        } else {
            check.timeout = check.timeout.min(check.interval);
        }
        for (value, slot) in [
            (&health.unhealthy_after, &mut check.unhealthy_after),
            (&health.healthy_after, &mut check.healthy_after),
        ] {
            if let Some(n) = value {
                if !(1..=100).contains(n.get_ref()) {
                    self.error(n, "[health] unhealthy_after and healthy_after must be between 1 and 100 probes");
                }
                *slot = *n.get_ref();
            }
        }
        Some(check)
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
        let client_pair = self.client_certificate(tls, base);
        let min_version = tls.min_version.as_ref().and_then(|v| {
            let parsed = crate::upstream::TlsVersion::parse(v.get_ref());
            if parsed.is_none() {
                self.error(
                    v,
                    format!("min_version `{}` must be \"1.2\" or \"1.3\"", v.get_ref()),
                );
            }
            parsed
        });
        let client_pem = client_pair.as_ref().and_then(|(certs, key)| {
            let chain: Result<Vec<Vec<u8>>, _> = certs.iter().map(|c| c.to_pem()).collect();
            Some((
                chain.ok()?.concat(),
                crate::secret::SecretBytes::new(key.private_key_to_pem_pkcs8().ok()?),
            ))
        });
        let client = client_pair
            .map(|(certs, key)| std::sync::Arc::new(pingora::utils::tls::CertKey::new(certs, key)));
        UpstreamTls {
            verify,
            ca,
            client,
            client_pem,
            min_version,
        }
    }

    /// `client_cert_file` + `client_key_file`: the certificate (chain) the gateway shows a
    /// backend that demands mutual TLS, and its key, which must match.
    fn client_certificate(
        &mut self,
        tls: &FileUpstreamTls,
        base: &Path,
    ) -> Option<(
        Vec<openssl::x509::X509>,
        openssl::pkey::PKey<openssl::pkey::Private>,
    )> {
        let (cert_file, key_file) = match (&tls.client_cert_file, &tls.client_key_file) {
            (None, None) => return None,
            (Some(c), Some(k)) => (c, k),
            (Some(c), None) => {
                self.error(c, "client_cert_file needs client_key_file");
                return None;
            }
            (None, Some(k)) => {
                self.error(k, "client_key_file needs client_cert_file");
                return None;
            }
        };
        let cert_path = resolve(base, cert_file.get_ref());
        let key_path = resolve(base, key_file.get_ref());
        let certs = std::fs::read(&cert_path)
            .map_err(|e| e.to_string())
            .and_then(|pem| openssl::x509::X509::stack_from_pem(&pem).map_err(|e| e.to_string()));
        let certs = match certs {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                self.error(
                    cert_file,
                    format!(
                        "client_cert_file `{}` holds no certificate",
                        cert_path.display()
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(
                    cert_file,
                    format!(
                        "client_cert_file `{}` cannot be read as PEM certificates: {e}",
                        cert_path.display()
                    ),
                );
                return None;
            }
        };
        let key = match std::fs::read(&key_path)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                openssl::pkey::PKey::private_key_from_pem(&pem).map_err(|e| e.to_string())
            }) {
            Ok(k) => k,
            Err(e) => {
                // The reason, never the key's bytes.
                self.error(
                    key_file,
                    format!(
                        "client_key_file `{}` cannot be read as a PEM private key: {e}",
                        key_path.display()
                    ),
                );
                return None;
            }
        };
        if let Some(warning) = secret_file_exposure(&key_path) {
            self.warning(key_file, warning);
        }
        let matches = certs
            .first()
            .and_then(|c| c.public_key().ok())
            .is_some_and(|public| public.public_eq(&key));
        if !matches {
            self.error(
                key_file,
                format!(
                    "client_key_file `{}` is not the key of client_cert_file `{}`",
                    key_path.display(),
                    cert_path.display()
                ),
            );
            return None;
        }
        Some((certs, key))
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
    fn active_checks_take_defaults_and_refuse_what_cannot_work() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&format!("{HEAD}[health]\npath = \"/health\"\n"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let check = app.active_health().unwrap();
        assert_eq!(
            (
                check.interval,
                check.timeout,
                check.unhealthy_after,
                check.healthy_after
            ),
            (Duration::from_secs(10), Duration::from_secs(2), 3, 2)
        );
        assert_eq!(check.expect_status, vec![200]);
        let (app, _) = fx.compile(HEAD).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(app.active_health().is_none(), "off unless a path is given");
        for (extra, needle) in [
            ("interval = \"5s\"\n", "need `path`"),
            ("path = \"health\"\n", "must start with `/`"),
            (
                "path = \"/h\"\ninterval = \"1s\"\ntimeout = \"2s\"\n",
                "no longer than interval",
            ),
            (
                "path = \"/h\"\ninterval = \"10ms\"\n",
                "between 100ms and 1h",
            ),
            (
                "path = \"/h\"\nhealthy_after = 0\n",
                "between 1 and 100 probes",
            ),
            ("path = \"/h\"\nexpect_status = [99]\n", "HTTP statuses"),
        ] {
            assert_mentions(&fx.errors(&format!("{HEAD}[health]\n{extra}")), needle);
        }
    }

    #[test]
    fn a_client_certificate_needs_its_own_key_and_versions_are_named() {
        let fx = Fixture::new();
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/dev");
        let (app, _) = fx
            .compile(&format!(
                "{HEAD}[upstream_tls]\nclient_cert_file = \"{certs}/upstream-client.crt\"\n\
                 client_key_file = \"{certs}/upstream-client.key\"\nmin_version = \"1.3\"\n"
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(app.upstream_tls().client.is_some());
        assert_eq!(
            app.upstream_tls().min_version,
            Some(crate::upstream::TlsVersion::V1_3)
        );
        assert_mentions(
            &fx.errors(&format!(
                "{HEAD}[upstream_tls]\nclient_cert_file = \"{certs}/upstream-client.crt\"\n\
                 client_key_file = \"{certs}/backend.key\"\n"
            )),
            "is not the key of",
        );
        assert_mentions(
            &fx.errors(&format!(
                "{HEAD}[upstream_tls]\nclient_cert_file = \"{certs}/upstream-client.crt\"\n"
            )),
            "needs client_key_file",
        );
        assert_mentions(
            &fx.errors(&format!("{HEAD}[upstream_tls]\nmin_version = \"1.0\"\n")),
            "must be \"1.2\" or \"1.3\"",
        );
        assert!(crate::upstream::TlsVersion::V1_2.admits("TLSv1.3"));
        assert!(!crate::upstream::TlsVersion::V1_3.admits("TLSv1.2"));
        assert!(!crate::upstream::TlsVersion::V1_2.admits("TLSv1.1"));
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
