//! A headless "browser" for login flows: a cookie jar, page-navigation headers, redirects
//! followed one hop at a time (so tests can inspect or tamper with each), and HTML form
//! submission for the IdP's login and logout pages.

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// What a browser sends for a top-level page load.
pub const NAVIGATION: &[(&str, &str)] = &[
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("sec-fetch-mode", "navigate"),
];

/// One browser profile (its own cookies).
pub struct Browser {
    client: reqwest::Client,
    pub jar: Arc<Jar>,
}

/// The end of a chain of redirects.
#[derive(Debug)]
pub struct Trip {
    /// Every URL visited, in order (the first is where the trip started).
    pub hops: Vec<String>,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Trip {
    /// The URL that answered last.
    pub fn final_url(&self) -> &str {
        self.hops.last().map_or("", String::as_str)
    }
    /// The echo backend's JSON answer.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}) at {}: {}", self.final_url(), self.body))
    }
    /// Did the trip pass through a URL containing `needle`?
    pub fn visited(&self, needle: &str) -> bool {
        self.hops.iter().any(|h| h.contains(needle))
    }
    /// Is this the test IdP's password form?
    pub fn is_login_form(&self) -> bool {
        self.body.contains("name=\"password\"")
    }
}

impl Browser {
    /// A browser that reaches every name in `hosts` at `gateway`'s IP (the port comes from each
    /// URL; other hosts: by DNS) and trusts the test-only CA.
    pub fn new(gateway: SocketAddr, hosts: &[&str]) -> Self {
        Self::from_address(gateway, hosts, None)
    }

    /// A browser whose connections come from `local` (another client address on loopback,
    /// e.g. 127.0.0.7), when given.
    pub fn from_address(
        gateway: SocketAddr,
        hosts: &[&str],
        local: Option<std::net::IpAddr>,
    ) -> Self {
        let jar = Arc::new(Jar::default());
        let ca = std::fs::read(super::dev_cert("ca.crt")).unwrap();
        let mut builder = reqwest::Client::builder()
            .local_address(local)
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(30));
        for host in hosts {
            builder = builder.resolve(host, gateway);
        }
        Self {
            client: builder.build().unwrap(),
            jar,
        }
    }

    /// The same browser profile (its cookies) reaching `hosts` at another address: another
    /// gateway node, say.
    pub fn via(&self, gateway: SocketAddr, hosts: &[&str]) -> Self {
        let ca = std::fs::read(super::dev_cert("ca.crt")).unwrap();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(self.jar.clone())
            .timeout(Duration::from_secs(30));
        for host in hosts {
            builder = builder.resolve(host, gateway);
        }
        Self {
            client: builder.build().unwrap(),
            jar: self.jar.clone(),
        }
    }

    /// One GET as a page navigation, no redirect followed.
    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.get_with(url, NAVIGATION).await
    }

    /// One GET with exactly these extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// Navigates to `url` and follows redirects (at most 20).
    pub async fn follow(&self, url: &str) -> Trip {
        let first = self.get(url).await;
        self.follow_response(url, first).await
    }

    async fn follow_response(&self, url: &str, mut response: reqwest::Response) -> Trip {
        let mut hops = vec![url.to_string()];
        let mut current = url.to_string();
        for _ in 0..20 {
            if !response.status().is_redirection() {
                break;
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("redirect without Location from {current}"));
            current = Url::parse(&current)
                .unwrap()
                .join(location)
                .unwrap()
                .to_string();
            hops.push(current.clone());
            response = self.get(&current).await;
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Trip {
            hops,
            status,
            headers,
            body,
        }
    }

    /// Posts a form at `url` (as a browser would) and follows the redirects.
    pub async fn submit(&self, url: &str, form: &[(&str, &str)]) -> Trip {
        let response = self
            .client
            .post(url)
            .header("accept", "text/html")
            .form(form)
            .send()
            .await
            .unwrap();
        self.follow_response(url, response).await
    }

    /// Fills the IdP's password form reached by `trip` and follows where it leads.
    pub async fn sign_in(&self, trip: &Trip, user: &str, password: &str) -> Trip {
        assert!(
            trip.is_login_form(),
            "expected the IdP login form at {}: {}",
            trip.final_url(),
            trip.body
        );
        let action = form_action(&trip.body);
        let url = Url::parse(trip.final_url()).unwrap().join(&action).unwrap();
        self.submit(url.as_str(), &[("login", user), ("password", password)])
            .await
    }

    /// Signs in as alice on the IdP form reached by `form` and follows redirects up to, but
    /// not into, the gateway's callback; returns the callback URL.
    pub async fn sign_in_stop_at_callback(&self, form: &Trip) -> String {
        self.sign_in_stop_at(form, "/.portcullis/oidc/callback")
            .await
    }

    /// Signs in as alice and follows redirects until the next URL contains `needle`, which is
    /// returned without being requested.
    pub async fn sign_in_stop_at(&self, form: &Trip, needle: &str) -> String {
        self.sign_in_as_stop_at(form, "alice", needle).await
    }

    /// Signs in as `user` (password `<user>-pw`) and follows redirects until the next URL
    /// contains `needle`, which is returned without being requested.
    pub async fn sign_in_as_stop_at(&self, form: &Trip, user: &str, needle: &str) -> String {
        let action = form_action(&form.body);
        let url = Url::parse(form.final_url()).unwrap().join(&action).unwrap();
        let password = format!("{user}-pw");
        let mut response = self
            .client
            .post(url.as_str())
            .form(&[("login", user), ("password", password.as_str())])
            .send()
            .await
            .unwrap();
        let mut current = url.to_string();
        for _ in 0..20 {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("no redirect from {current}"));
            current = Url::parse(&current)
                .unwrap()
                .join(location)
                .unwrap()
                .to_string();
            if current.contains(needle) {
                return current;
            }
            response = self.get(&current).await;
        }
        panic!("never redirected to {needle}");
    }

    /// Navigates to a protected `url`, signs in at the IdP as `user`, and follows back.
    pub async fn login(&self, url: &str, user: &str, password: &str) -> Trip {
        let form = self.follow(url).await;
        let mut trip = self.sign_in(&form, user, password).await;
        let mut hops = form.hops;
        hops.append(&mut trip.hops);
        trip.hops = hops;
        trip
    }

    /// Submits an auto-POST page (the SAML HTTP-POST binding: hidden `SAMLResponse` and
    /// `RelayState` fields) as the page's script would, and follows the redirects.
    pub async fn auto_post(&self, trip: &Trip) -> Trip {
        let action = form_action(&trip.body);
        let url = Url::parse(trip.final_url()).unwrap().join(&action).unwrap();
        let fields = hidden_inputs(&trip.body);
        let form: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.submit(url.as_str(), &form).await
    }

    /// Navigates to a protected `url` behind SAML, signs in at the IdP as `user`, posts the
    /// response to the gateway and follows back.
    pub async fn saml_login(&self, url: &str, user: &str, password: &str) -> Trip {
        let form = self.follow(url).await;
        let posted = self.sign_in(&form, user, password).await;
        assert!(
            posted.body.contains("SAMLResponse"),
            "expected the IdP's auto-POST page: {posted:?}"
        );
        let mut trip = self.auto_post(&posted).await;
        let mut hops = form.hops;
        hops.extend(posted.hops);
        hops.append(&mut trip.hops);
        trip.hops = hops;
        trip
    }

    /// Posts a SAML response (base64) to the ACS as the IdP's auto-POST page would.
    pub async fn post_saml_response(
        &self,
        acs: &str,
        saml_response: &str,
        relay_state: Option<&str>,
    ) -> Trip {
        let mut form = vec![("SAMLResponse", saml_response)];
        if let Some(relay) = relay_state {
            form.push(("RelayState", relay));
        }
        self.submit(acs, &form).await
    }

    /// Confirms the IdP's "sign out?" page reached by `trip`.
    pub async fn confirm_logout(&self, trip: &Trip) -> Trip {
        let action = form_action(&trip.body);
        let xsrf = hidden_input(&trip.body, "xsrf");
        let url = Url::parse(trip.final_url()).unwrap().join(&action).unwrap();
        self.submit(url.as_str(), &[("xsrf", &xsrf), ("logout", "yes")])
            .await
    }

    /// The `Cookie` header this browser would send to `url`.
    pub fn cookies_for(&self, url: &str) -> String {
        self.jar
            .cookies(&Url::parse(url).unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// The first form's `action`.
pub fn form_action(html: &str) -> String {
    let start = html.find("action=\"").expect("form with an action") + 8;
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&")
}

/// The value of the hidden input called `name`.
pub fn hidden_input(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} in {html}"));
    let tag_start = html[..at].rfind('<').unwrap();
    let tag_end = html[at..].find('>').unwrap() + at;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"").unwrap() + 7;
    let e = tag[v..].find('"').unwrap() + v;
    tag[v..e].to_string()
}

/// Every hidden input of the page, in order, with HTML character references decoded.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let marker = format!("{name}=\"");
        let v = tag.find(&marker)? + marker.len();
        let e = tag[v..].find('"')? + v;
        Some(unescape_html(&tag[v..e]))
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            if !tag.contains("type=\"hidden\"") {
                return None;
            }
            Some((attr(tag, "name")?, attr(tag, "value")?))
        })
        .collect()
}

fn unescape_html(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("&#") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find(';').and_then(|end| {
            let n: u32 = after[..end].parse().ok()?;
            Some((char::from_u32(n)?, end))
        }) {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("&#");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("&amp;", "&").replace("&quot;", "\"")
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` with query parameter `name` replaced by `value`.
pub fn with_query_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}
