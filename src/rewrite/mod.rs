//! Fronting an app that only knows its internal name: its answers name `http://intranet:8080`
//! (redirects, cookies, links), the browser must only ever see the public origin.
//!
//! On by default for headers, as Apache's `ProxyPassReverse` does: `Location`,
//! `Content-Location` and `Refresh` URLs on an internal origin move to the public one, and a
//! `Set-Cookie` scoped to an internal host loses its `Domain` (the browser keeps it for the
//! public host) and, under a path prefix, its `Path` is narrowed to the app's prefix. Bodies
//! (HTML, CSS, JavaScript) are rewritten only where the policy opts in ([`body`]).
//!
//! Paths are never rewritten: the gateway forwards the path it judged, so an app mounted at a
//! prefix is mounted there upstream too.

pub mod body;
mod headers;

pub use body::{BodyRewriter, RewriteError};

use http::{HeaderMap, HeaderName, HeaderValue};

/// An origin (`scheme://host[:port]`) the app uses for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalOrigin {
    scheme: String,
    host: String,
    port: u16,
}

impl InternalOrigin {
    /// Parses `http(s)://host[:port]` (no path, query or credentials).
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`{text}`: only http and https origins are rewritten"
            ));
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(format!(
                "`{text}` must be an origin only: scheme://host[:port]"
            ));
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(format!("`{text}` has no host"));
        };
        Ok(Self {
            scheme: url.scheme().to_string(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host name (or address) the app calls itself.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn default_port(&self) -> bool {
        matches!(
            (self.scheme.as_str(), self.port),
            ("http", 80) | ("https", 443)
        )
    }

    /// Does this absolute URL live on this origin?
    fn holds(&self, url: &url::Url) -> bool {
        url.scheme() == self.scheme
            && url
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port)
    }

    /// Every way a page may write this origin: with and without a default port.
    fn spellings(&self) -> Vec<String> {
        let explicit = format!("{}://{}:{}", self.scheme, self.host, self.port);
        if self.default_port() {
            vec![format!("{}://{}", self.scheme, self.host), explicit]
        } else {
            vec![explicit]
        }
    }
}

/// The origin the browser used for this request.
#[derive(Debug, Clone, Copy)]
pub struct PublicOrigin<'a> {
    /// Came over TLS.
    pub secure: bool,
    /// `host[:port]` as the browser sent it (validated by the gateway).
    pub authority: &'a str,
}

impl PublicOrigin<'_> {
    fn base(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    /// Behind TLS, a backend that believes it is served over plain HTTP writes
    /// `http://<public host>`: that is an internal spelling too (never a downgrade).
    fn plain_twin(&self) -> Option<InternalOrigin> {
        if !self.secure {
            return None;
        }
        InternalOrigin::parse(&format!("http://{}", self.authority)).ok()
    }
}

/// An app's rewriting settings (`[rewrite]`), compiled.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    headers: bool,
    internal: Vec<InternalOrigin>,
    body_types: Vec<String>,
    path_prefix: String,
}

/// What the response phase does to the body after [`Rewrite::response`].
#[derive(Debug)]
pub enum BodyPlan {
    /// Pass it through.
    Untouched,
    /// Feed every chunk through this.
    Rewrite(Box<BodyRewriter>),
}

/// What to change in one response: applied by the proxy through Pingora's header API (which
/// keeps the header case map in step).
#[derive(Debug)]
pub struct ResponseEdits {
    /// Headers to replace, one value each.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// The whole `Set-Cookie` list, when a cookie changed.
    pub set_cookies: Option<Vec<HeaderValue>>,
    /// Headers to remove.
    pub remove: Vec<HeaderName>,
    /// What happens to the body.
    pub body: BodyPlan,
}

impl Rewrite {
    /// Settings for an app: rewrite headers or not, the origins it uses for itself (its
    /// upstreams' and the policy's `internal_origins`), the media types whose bodies are
    /// rewritten, and its path prefix (`""` for a whole host).
    pub fn new(
        headers: bool,
        mut internal: Vec<InternalOrigin>,
        body_types: Vec<String>,
        path_prefix: &str,
    ) -> Self {
        internal.dedup();
        Self {
            headers,
            internal,
            body_types,
            path_prefix: path_prefix.to_string(),
        }
    }

    /// The origins the app uses for itself.
    pub fn internal_origins(&self) -> &[InternalOrigin] {
        &self.internal
    }

    /// Media types whose bodies are rewritten (empty: bodies are left alone).
    pub fn body_types(&self) -> &[String] {
        &self.body_types
    }

    /// Whether the upstream must be asked for uncompressed bodies (fewer to decode here).
    pub fn rewrites_bodies(&self) -> bool {
        !self.body_types.is_empty()
    }

    fn origins_for(&self, public: &PublicOrigin<'_>) -> Vec<InternalOrigin> {
        let mut origins = self.internal.clone();
        if let Some(twin) = public.plain_twin() {
            if !origins.contains(&twin) {
                origins.push(twin);
            }
        }
        origins
    }

    /// The edits that make the upstream's response header right for the browser at
    /// `public`, and what to do with the body. `bodyless` (a HEAD request, 204, 304) leaves
    /// the body alone.
    pub fn response(
        &self,
        public: &PublicOrigin<'_>,
        headers: &HeaderMap,
        bodyless: bool,
    ) -> ResponseEdits {
        let origins = self.origins_for(public);
        let mut edits = ResponseEdits {
            set: Vec::new(),
            set_cookies: None,
            remove: Vec::new(),
            body: BodyPlan::Untouched,
        };
        if self.headers {
            (edits.set, edits.set_cookies) =
                headers::rewrite(headers, &origins, public, &self.path_prefix);
        }
        if bodyless || self.body_types.is_empty() {
            return edits;
        }
        let media_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if !media_type.is_some_and(|t| self.body_types.contains(&t)) {
            return edits;
        }
        let encoding = headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
        let Some(decoder) = body::Decoding::for_encoding(encoding.as_deref()) else {
            tracing::debug!(
                encoding = encoding.as_deref().unwrap_or(""),
                "body not rewritten: content encoding not understood"
            );
            return edits;
        };
        let from: Vec<String> = origins.iter().flat_map(InternalOrigin::spellings).collect();
        let Ok(rewriter) = BodyRewriter::new(&from, &public.base(), decoder) else {
            return edits;
        };
        // Streamed: the length is not known until the end, and the bytes differ from the
        // backend's (no ranges, no strong validator).
        edits.remove.extend([
            http::header::CONTENT_LENGTH,
            http::header::CONTENT_ENCODING,
            http::header::ACCEPT_RANGES,
            http::header::ETAG,
        ]);
        edits.set.push((
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        ));
        edits.body = BodyPlan::Rewrite(Box::new(rewriter));
        edits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body_types: &[&str]) -> Rewrite {
        Rewrite::new(
            true,
            vec![
                InternalOrigin::parse("http://intranet-host:8080").unwrap(),
                InternalOrigin::parse("http://legacy.corp.local").unwrap(),
            ],
            body_types.iter().map(|t| t.to_string()).collect(),
            "",
        )
    }

    const PUBLIC: PublicOrigin<'static> = PublicOrigin {
        secure: true,
        authority: "hr.example.com",
    };

    #[test]
    fn origins_are_parsed_strictly() {
        assert!(InternalOrigin::parse("http://h:8080").is_ok());
        for bad in [
            "ftp://h",
            "http://h/path",
            "http://u:p@h",
            "h:8080",
            "http://h?x",
        ] {
            assert!(InternalOrigin::parse(bad).is_err(), "{bad}");
        }
        let o = InternalOrigin::parse("http://legacy.corp.local").unwrap();
        assert_eq!(
            o.spellings(),
            vec!["http://legacy.corp.local", "http://legacy.corp.local:80"]
        );
    }

    fn plan(rw: &Rewrite, headers: &[(&str, &str)], bodyless: bool) -> ResponseEdits {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        rw.response(&PUBLIC, &map, bodyless)
    }

    #[test]
    fn bodies_are_planned_only_for_listed_types_and_known_encodings() {
        let rw = rewrite(&["text/html"]);
        let html = [
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "12"),
            ("content-encoding", "gzip"),
        ];
        let edits = plan(&rw, &html, false);
        assert!(matches!(edits.body, BodyPlan::Rewrite(_)));
        assert!(edits.remove.contains(&http::header::CONTENT_LENGTH));
        assert!(edits.remove.contains(&http::header::CONTENT_ENCODING));

        let image = plan(&rw, &[("content-type", "image/png")], false);
        assert!(matches!(image.body, BodyPlan::Untouched));
        assert!(image.remove.is_empty());
        let zstd = plan(
            &rw,
            &[("content-type", "text/html"), ("content-encoding", "zstd")],
            false,
        );
        assert!(matches!(zstd.body, BodyPlan::Untouched));
        let head = plan(&rw, &[("content-type", "text/html")], true);
        assert!(matches!(head.body, BodyPlan::Untouched));
        // Off unless asked for.
        let off = plan(&rewrite(&[]), &[("content-type", "text/html")], false);
        assert!(matches!(off.body, BodyPlan::Untouched));
    }

    #[test]
    fn behind_tls_the_public_host_over_plain_http_is_internal_too() {
        let rw = rewrite(&[]);
        let edits = plan(
            &rw,
            &[("location", "http://hr.example.com/after-login")],
            false,
        );
        assert_eq!(
            edits.set,
            vec![(
                http::header::LOCATION,
                HeaderValue::from_static("https://hr.example.com/after-login")
            )]
        );
        // Switched off, nothing moves.
        let off = Rewrite::new(false, rw.internal.clone(), vec![], "");
        let edits = off.response(
            &PUBLIC,
            &[(
                http::header::LOCATION,
                HeaderValue::from_static("http://intranet-host:8080/"),
            )]
            .into_iter()
            .collect(),
            false,
        );
        assert!(edits.set.is_empty());
    }
}
