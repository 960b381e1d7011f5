//! Response headers that name the app's internal origin: `Location`, `Content-Location`,
//! `Refresh` and `Set-Cookie`.

use super::{InternalOrigin, PublicOrigin};
use http::{HeaderMap, HeaderName, HeaderValue};

/// New values for every header that points the browser at an internal origin: single
/// headers to replace, and the whole `Set-Cookie` list when any cookie changed.
pub(super) fn rewrite(
    headers: &HeaderMap,
    origins: &[InternalOrigin],
    public: &PublicOrigin<'_>,
    path_prefix: &str,
) -> (Vec<(HeaderName, HeaderValue)>, Option<Vec<HeaderValue>>) {
    let mut set = Vec::new();
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        if let Some(new) = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| public_url(v, origins, public))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            set.push((name, new));
        }
    }
    if let Some(new) = headers
        .get(http::header::REFRESH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| refresh(v, origins, public))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        set.push((http::header::REFRESH, new));
    }
    let mut changed = false;
    let cookies: Vec<HeaderValue> = headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|v| {
            match v
                .to_str()
                .ok()
                .and_then(|text| set_cookie(text, origins, path_prefix))
                .and_then(|text| HeaderValue::from_str(&text).ok())
            {
                Some(new) => {
                    changed = true;
                    new
                }
                None => v.clone(),
            }
        })
        .collect();
    (set, changed.then_some(cookies))
}

/// `url` moved to the public origin, when it is absolute and on an internal one.
fn public_url(url: &str, origins: &[InternalOrigin], public: &PublicOrigin<'_>) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    if !origins.iter().any(|o| o.holds(&parsed)) {
        return None;
    }
    Some(format!(
        "{}{}",
        public.base(),
        &parsed[url::Position::BeforePath..]
    ))
}

/// `Refresh: 5; url=http://intranet/...` with its URL moved.
fn refresh(value: &str, origins: &[InternalOrigin], public: &PublicOrigin<'_>) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find("url=")?.saturating_add(4);
    let (head, target) = value.split_at(at);
    let quote = target.chars().next().filter(|c| matches!(c, '\'' | '"'));
    let bare = match quote {
        Some(q) => target.trim_start_matches(q).trim_end_matches(q),
        None => target,
    };
    let moved = public_url(bare, origins, public)?;
    Some(format!("{head}{moved}"))
}

/// A `Set-Cookie` scoped for the public host: a `Domain` that names an internal host goes
/// (the cookie becomes the public host's alone) and, under a path prefix, a `Path` outside
/// it is narrowed to the prefix, so one app's cookie does not reach its neighbours.
fn set_cookie(text: &str, origins: &[InternalOrigin], path_prefix: &str) -> Option<String> {
    let mut cookie = cookie::Cookie::parse(text).ok()?;
    let mut changed = false;
    if let Some(domain) = cookie
        .domain()
        .map(|d| d.trim_start_matches('.').to_ascii_lowercase())
    {
        let internal = origins.iter().any(|o| {
            o.host() == domain
                || o.host()
                    .strip_suffix(domain.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        });
        if internal {
            cookie.unset_domain();
            changed = true;
        }
    }
    if !path_prefix.is_empty() {
        let inside = cookie.path().is_some_and(|p| {
            p == path_prefix
                || p.strip_prefix(path_prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        if !inside {
            cookie.set_path(path_prefix.to_string());
            changed = true;
        }
    }
    changed.then(|| cookie.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> Vec<InternalOrigin> {
        vec![
            InternalOrigin::parse("http://intranet-host:8080").unwrap(),
            InternalOrigin::parse("http://127.0.0.1:9001").unwrap(),
        ]
    }

    const PUBLIC: PublicOrigin<'static> = PublicOrigin {
        secure: true,
        authority: "hr.example.com:8443",
    };

    #[test]
    fn internal_redirects_move_to_the_public_origin_and_others_stay() {
        let o = origins();
        assert_eq!(
            public_url("http://intranet-host:8080/a/b?c=d#e", &o, &PUBLIC).as_deref(),
            Some("https://hr.example.com:8443/a/b?c=d#e")
        );
        assert_eq!(
            public_url("http://INTRANET-HOST:8080", &o, &PUBLIC).as_deref(),
            Some("https://hr.example.com:8443/")
        );
        for untouched in [
            "/relative",
            "http://intranet-host:8081/other-port",
            "https://intranet-host:8080/other-scheme",
            "http://intranet-host.evil.example:8080/",
            "https://idp.example.com/login",
        ] {
            assert_eq!(public_url(untouched, &o, &PUBLIC), None, "{untouched}");
        }
    }

    #[test]
    fn refresh_urls_move_with_or_without_quotes() {
        let o = origins();
        assert_eq!(
            refresh("5; url=http://intranet-host:8080/next", &o, &PUBLIC).as_deref(),
            Some("5; url=https://hr.example.com:8443/next")
        );
        assert_eq!(
            refresh("0;URL='http://127.0.0.1:9001/x'", &o, &PUBLIC).as_deref(),
            Some("0;URL=https://hr.example.com:8443/x")
        );
        assert_eq!(refresh("10", &o, &PUBLIC), None);
    }

    #[test]
    fn cookies_lose_internal_domains_and_stay_inside_the_prefix() {
        let o = vec![InternalOrigin::parse("http://intranet-host.corp.local:8080").unwrap()];
        let moved = set_cookie(
            "JSESSIONID=abc; Domain=.corp.local; Path=/; HttpOnly",
            &o,
            "/hr",
        )
        .unwrap();
        assert!(!moved.to_ascii_lowercase().contains("domain"), "{moved}");
        assert!(moved.contains("Path=/hr"), "{moved}");
        assert!(moved.contains("HttpOnly"), "{moved}");
        // A path already inside the prefix and no internal domain: nothing to do.
        assert_eq!(set_cookie("a=b; Path=/hr/x", &o, "/hr"), None);
        assert_eq!(set_cookie("a=b; Domain=example.com", &o, ""), None);
        // `/hrx` is not inside `/hr`.
        let narrowed = set_cookie("a=b; Path=/hrx", &o, "/hr").unwrap();
        assert!(
            narrowed.contains("Path=/hr") && !narrowed.contains("/hrx"),
            "{narrowed}"
        );
    }

    #[test]
    fn every_header_is_rewritten_and_cookies_keep_their_order() {
        let mut headers = HeaderMap::new();
        headers.insert("location", "http://intranet-host:8080/x".parse().unwrap());
        headers.insert("content-location", "/same".parse().unwrap());
        headers.append(
            "set-cookie",
            "s=1; Domain=intranet-host; Path=/".parse().unwrap(),
        );
        headers.append("set-cookie", "t=2".parse().unwrap());
        let (set, cookies) = rewrite(&headers, &origins(), &PUBLIC, "");
        assert_eq!(
            set,
            vec![(
                http::header::LOCATION,
                HeaderValue::from_static("https://hr.example.com:8443/x")
            )]
        );
        assert_eq!(
            cookies.unwrap(),
            vec![
                HeaderValue::from_static("s=1; Path=/"),
                HeaderValue::from_static("t=2")
            ]
        );
        let mut plain = HeaderMap::new();
        plain.append("set-cookie", "t=2".parse().unwrap());
        assert_eq!(rewrite(&plain, &origins(), &PUBLIC, ""), (vec![], None));
    }
}
