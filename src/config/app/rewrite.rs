//! Compiling `[rewrite]`: which origins an app calls itself, and which bodies to rewrite.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::rewrite::{InternalOrigin, Rewrite};

/// Media types whose bodies can be rewritten (text that holds URLs).
const REWRITABLE_TYPES: &[&str] = &[
    "text/html",
    "application/xhtml+xml",
    "text/css",
    "application/javascript",
    "text/javascript",
    "application/json",
    "application/xml",
    "text/xml",
    "text/plain",
];

impl Compiler<'_> {
    pub(super) fn rewrite(
        &mut self,
        file: &FilePolicy,
        upstreams: &[UpstreamTarget],
        path_prefix: &str,
    ) -> Rewrite {
        let spec = &file.rewrite;
        // The upstreams' own origins always count: an app redirecting to the address it
        // is reached at is the commonest case (ProxyPassReverse's).
        let mut origins: Vec<InternalOrigin> = upstreams
            .iter()
            .filter_map(|u| InternalOrigin::parse(&u.url).ok())
            .collect();
        for origin in &spec.internal_origins {
            match InternalOrigin::parse(origin.get_ref()) {
                Ok(o) => origins.push(o),
                Err(message) => {
                    self.error(origin, format!("[rewrite] internal_origins: {message}"))
                }
            }
        }
        let mut body_types = Vec::new();
        for media_type in &spec.body {
            let text = media_type.get_ref().trim().to_ascii_lowercase();
            if REWRITABLE_TYPES.contains(&text.as_str()) {
                body_types.push(text);
            } else {
                self.error(
                    media_type,
                    format!(
                        "[rewrite] body: `{}` is not a text type that can be rewritten (one of: {})",
                        media_type.get_ref(),
                        REWRITABLE_TYPES.join(", ")
                    ),
                );
            }
        }
        let headers = spec.headers.as_ref().is_none_or(|h| *h.get_ref());
        Rewrite::new(headers, origins, body_types, path_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD};

    #[test]
    fn upstream_origins_always_count_and_bodies_are_opt_in() {
        let fx = Fixture::new();
        let (app, _) = fx.compile(HEAD).unwrap_or_else(|e| panic!("{e:?}"));
        let hosts: Vec<&str> = app
            .rewrite()
            .internal_origins()
            .iter()
            .map(|o| o.host())
            .collect();
        assert_eq!(hosts, vec!["127.0.0.1"]);
        assert!(!app.rewrite().rewrites_bodies());

        let (app, _) = fx
            .compile(&format!(
                "{HEAD}[rewrite]\ninternal_origins = [\"http://intranet-host:8080\"]\nbody = [\"text/html\", \"Text/CSS\"]\n"
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(app.rewrite().internal_origins().len(), 2);
        assert_eq!(app.rewrite().body_types(), ["text/html", "text/css"]);
    }

    #[test]
    fn origins_with_paths_and_binary_types_are_refused() {
        let fx = Fixture::new();
        assert_mentions(
            &fx.errors(&format!(
                "{HEAD}[rewrite]\ninternal_origins = [\"http://intranet/app\"]\n"
            )),
            "must be an origin only",
        );
        assert_mentions(
            &fx.errors(&format!("{HEAD}[rewrite]\nbody = [\"image/png\"]\n")),
            "not a text type",
        );
    }
}
