//! The gateway's own pages: branded, self-contained HTML for errors and notices.
//!
//! Owns wording and markup only. Pages name no backend, rule internals or secrets; they carry
//! the request id so a user can quote it to the help desk. Markup is written with `maud`: it
//! is checked when the gateway is compiled and every value is escaped unless marked otherwise.

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// A page the gateway answers with instead of a backend response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 400: the request is malformed or ambiguous.
    BadRequest,
    /// 431: the request headers are larger than the gateway accepts.
    HeadersTooLarge,
    /// 403: policy refuses the request.
    Forbidden,
    /// 404: no app on this host, or an unknown gateway endpoint.
    NotFound,
    /// 404: the host has apps, but none at this path.
    NoSuchPage,
    /// 502: the backend could not be reached.
    BadGateway,
    /// 503: the app is switched off (e.g. its policy failed to load).
    Unavailable,
    /// 504: the backend did not answer in time.
    GatewayTimeout,
    /// 500: something failed inside the gateway.
    Internal,
    /// 401: sign-in needed, but this request is not a page navigation (XHR, API call).
    LoginRequired,
    /// 401: the app needs the user's password for it stored first, and this request is not a
    /// page navigation (so it is not sent to the enrollment page).
    CredentialRequired,
    /// 503: the identity provider cannot be reached yet.
    SignInUnavailable,
    /// 400: the return from the identity provider could not be accepted.
    SignInFailed,
    /// 503: the identity provider could not be reached to finish the sign-in.
    IdpUnreachable,
    /// 503: the session store (Redis) does not answer, so nobody's session can be checked.
    StoreUnavailable,
    /// 503: signed out in this browser, but the session store could not end the session.
    SignOutIncomplete,
    /// 200: the user has signed out.
    SignedOut,
    /// 200: signed out here, but the identity provider did not confirm its logout.
    SignedOutUnconfirmed,
    /// 413: the request body is larger than the endpoint accepts.
    PayloadTooLarge,
    /// 405: this gateway endpoint does not take this method.
    MethodNotAllowed,
    /// 400: a gateway form was submitted with a token that is no longer valid.
    FormExpired,
    /// 429: too many sign-in attempts from this address (or to this app) just now.
    TooManySignIns,
    /// 500: the user's identity cannot be passed to the app (a value over the size limit, or
    /// one a header or cookie cannot carry).
    IdentityUndeliverable,
    /// 503: the company directory could not be read at sign-in, and this app needs it.
    DirectoryUnavailable,
    /// 403: the app signs users in with Kerberos, and this user has no usable principal.
    KerberosNoAccount,
    /// 503: no Kerberos ticket for the app (KDC down or slow, delegation refused).
    KerberosUnavailable,
}

impl Page {
    /// HTTP status of this page.
    pub fn status(self) -> u16 {
        match self {
            Page::BadRequest => 400,
            Page::HeadersTooLarge => 431,
            Page::Forbidden => 403,
            Page::NotFound | Page::NoSuchPage => 404,
            Page::BadGateway => 502,
            Page::Unavailable => 503,
            Page::GatewayTimeout => 504,
            Page::Internal | Page::IdentityUndeliverable => 500,
            Page::LoginRequired | Page::CredentialRequired => 401,
            Page::SignInUnavailable => 503,
            Page::SignInFailed | Page::FormExpired => 400,
            Page::IdpUnreachable
            | Page::StoreUnavailable
            | Page::SignOutIncomplete
            | Page::DirectoryUnavailable
            | Page::KerberosUnavailable => 503,
            Page::KerberosNoAccount => 403,
            Page::SignedOut | Page::SignedOutUnconfirmed => 200,
            Page::PayloadTooLarge => 413,
            Page::MethodNotAllowed => 405,
            Page::TooManySignIns => 429,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::BadRequest => "Bad request",
            Page::HeadersTooLarge => "Request headers too large",
            Page::Forbidden => "Access denied",
            Page::NotFound | Page::NoSuchPage => "Not found",
            Page::BadGateway => "Application unreachable",
            Page::Unavailable => "Application unavailable",
            Page::GatewayTimeout => "Application did not respond",
            Page::Internal => "Gateway error",
            Page::LoginRequired => "Sign-in required",
            Page::CredentialRequired => "Password for this application needed",
            Page::IdpUnreachable | Page::StoreUnavailable => "Sign-in temporarily unavailable",
            Page::SignOutIncomplete => "Sign-out not finished",
            Page::FormExpired => "This form expired",
            Page::SignInUnavailable => "Sign-in temporarily unavailable",
            Page::SignInFailed => "Sign-in failed",
            Page::SignedOut => "Signed out",
            Page::SignedOutUnconfirmed => "Signed out here only",
            Page::PayloadTooLarge => "Request too large",
            Page::MethodNotAllowed => "Method not allowed",
            Page::TooManySignIns => "Too many sign-in attempts",
            Page::IdentityUndeliverable => "Your identity cannot be passed to this application",
            Page::DirectoryUnavailable => "Your directory details are missing",
            Page::KerberosNoAccount => "No Windows account for you on this application",
            Page::KerberosUnavailable => "Windows sign-in to this application is unavailable",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Page::BadRequest => "The gateway could not accept this request.",
            Page::HeadersTooLarge => "The request carried more header data than the gateway accepts. Clearing this site's cookies usually helps.",
            Page::Forbidden => "Your access policy does not allow this request. If you need access, ask the application's owner.",
            Page::NotFound => "There is no application at this address.",
            Page::NoSuchPage => "This application has no page at this address. Check the link, or start again from the application's home page.",
            Page::CredentialRequired => "This application needs your password for it, stored once with the gateway. Open the application in your browser to store it.",
            Page::IdpUnreachable => "The sign-in service could not be reached to finish signing you in. Please try again in a few minutes.",
            Page::StoreUnavailable => "The sign-in service is temporarily unavailable, so your session cannot be checked right now. Please try again in a moment.",
            Page::SignOutIncomplete => "You are signed out in this browser, but the gateway could not end your session everywhere just now. Please sign out again in a moment.",
            Page::FormExpired => "This form expired; reload the page and submit it again.",
            Page::TooManySignIns => "There were too many sign-in attempts from your network just now. Please wait a minute, then reload the page.",
            Page::BadGateway => "The application behind this gateway could not be reached. Please try again in a moment.",
            Page::Unavailable => "This application is temporarily unavailable. The IT team has been notified through the gateway logs.",
            Page::GatewayTimeout => "The application took too long to answer. Please try again in a moment.",
            Page::Internal => "Something went wrong inside the gateway. Please try again.",
            Page::LoginRequired => "Your session has ended or you are not signed in. Reload the page to sign in again.",
            Page::SignInUnavailable => "The sign-in service cannot be reached right now. Please try again in a few minutes.",
            Page::SignInFailed => "The sign-in could not be completed (it may have expired or been opened twice). Go back to the application and try again.",
            Page::SignedOut => "You have signed out. Close this window, or open the application again to sign back in.",
            Page::SignedOutUnconfirmed => "You are signed out of this application, but the sign-in service did not confirm that it signed you out too. Close your browser to end that session, or sign out at the sign-in service.",
            Page::PayloadTooLarge => "The request carried more data than the gateway accepts here.",
            Page::MethodNotAllowed => "This gateway address does not accept this kind of request.",
            Page::DirectoryUnavailable => "When you signed in, your details could not be read from the company directory, and this application needs them. Please sign out and sign in again in a few minutes.",
            Page::KerberosNoAccount => "This application signs you in with your Windows (Kerberos) account, and none was found for you. Ask the IT team to link your account; the request id below helps them find the details.",
            Page::KerberosUnavailable => "This application signs you in with your Windows (Kerberos) account, and the gateway could not get a ticket for it just now. Try again in a few minutes; if it keeps happening, give the IT team the request id below.",
            Page::IdentityUndeliverable => "The gateway could not pass who you are to this application: one of your attributes (a long group list, for instance) is larger than the application's headers may carry, or holds characters they cannot. The IT team can find the details in the gateway log under the request id below.",
        }
    }

    /// The full HTML document, with the request id for support.
    pub fn render(self, request_id: &str) -> String {
        self.render_for(request_id, None)
    }

    /// [`Self::render`], naming who is signed in (`signed_in_as`, on refusals: so a user with
    /// the wrong account sees it, and can sign out and switch).
    pub fn render_for(self, request_id: &str, signed_in_as: Option<&str>) -> String {
        let status = self.status();
        let title = self.title();
        let body = html! {
            p { (self.message()) }
            @if let Some(user) = signed_in_as {
                p.who {
                    "Signed in as " b { (user) } ". "
                    a href="/.portcullis/logout" { "Sign out or switch user" }
                }
            }
            @if status >= 400 {
                p.code { "Error " (status) }
            }
        };
        shell(&format!("{status} {title}"), title, body, request_id)
    }

    /// A short machine-readable name, for JSON answers to API clients.
    pub fn slug(self) -> &'static str {
        match self {
            Page::BadRequest => "bad_request",
            Page::HeadersTooLarge => "headers_too_large",
            Page::Forbidden => "forbidden",
            Page::NotFound => "not_found",
            Page::NoSuchPage => "not_found",
            Page::BadGateway => "bad_gateway",
            Page::Unavailable => "app_unavailable",
            Page::GatewayTimeout => "gateway_timeout",
            Page::Internal => "internal_error",
            Page::LoginRequired => "login_required",
            Page::CredentialRequired => "credential_required",
            Page::SignInUnavailable => "sign_in_unavailable",
            Page::SignInFailed => "sign_in_failed",
            Page::IdpUnreachable => "sign_in_unavailable",
            Page::StoreUnavailable => "session_store_unavailable",
            Page::SignOutIncomplete => "sign_out_incomplete",
            Page::SignedOut => "signed_out",
            Page::SignedOutUnconfirmed => "signed_out_here_only",
            Page::PayloadTooLarge => "payload_too_large",
            Page::MethodNotAllowed => "method_not_allowed",
            Page::FormExpired => "form_expired",
            Page::TooManySignIns => "too_many_sign_ins",
            Page::IdentityUndeliverable => "identity_undeliverable",
            Page::DirectoryUnavailable => "directory_unavailable",
            Page::KerberosNoAccount => "kerberos_no_account",
            Page::KerberosUnavailable => "kerberos_unavailable",
        }
    }

    /// The page as JSON, for clients that asked for JSON (`Accept: application/json`).
    pub fn render_json(self, request_id: &str) -> String {
        serde_json::json!({
            "error": self.slug(),
            "status": self.status(),
            "message": self.message(),
            "request_id": request_id,
        })
        .to_string()
    }
}

/// The "down for maintenance" page of an app in `[maintenance]` (503): the policy's message,
/// and, where administrators may still get in, a way for them to sign in.
pub fn maintenance(message: Option<&str>, admin_sign_in: Option<&str>, request_id: &str) -> String {
    let body = html! {
        p { "This application is down for maintenance." }
        @if let Some(message) = message {
            p.notice { (message) }
        }
        p { "Please try again later." }
        @if let Some(href) = admin_sign_in {
            p.who { "Administrators: " a href=(href) { "sign in to work on it" } "." }
        }
        p.code { "Error 503" }
    };
    shell(
        "503 Down for maintenance",
        "Down for maintenance",
        body,
        request_id,
    )
}

/// The credential enrollment form (`/.portcullis/credentials/<app>`).
pub struct CredentialForm<'a> {
    /// The app id.
    pub app: &'a str,
    /// The app's one-line summary from its policy.
    pub summary: &'a str,
    /// Where the form posts.
    pub action: &'a str,
    /// The user types the account name too.
    pub asks_username: bool,
    /// The backend refused the stored password.
    pub failed: bool,
    /// The session's form token.
    pub csrf: &'a str,
    /// Where to go once stored.
    pub return_to: &'a str,
    /// Who is signed in.
    pub signed_in_as: &'a str,
}

impl CredentialForm<'_> {
    /// The full HTML document.
    pub fn render(&self, request_id: &str) -> String {
        let heading = format!("Password for {}", self.app);
        let body = html! {
            @if self.failed {
                p role="alert" { "The application refused the stored password. Enter your current password for it." }
            }
            p { (self.summary) }
            p { "This application has its own password. Store it once; the gateway signs you in to it from now on. It is kept encrypted and never shown again." }
            form method="post" action=(self.action) {
                @if self.asks_username {
                    label { "User name at the app " input name="username" autocomplete="username" required; }
                }
                label { "Password " input name="password" type="password" autocomplete="current-password" required; }
                input type="hidden" name="csrf" value=(self.csrf);
                input type="hidden" name="return_to" value=(self.return_to);
                button type="submit" { "Save" }
            }
            p.who { "Signed in as " b { (self.signed_in_as) } "." }
        };
        shell(&heading, &heading, body, request_id)
    }
}

/// The script that submits [`PostToIdp`]'s form as soon as the page loads.
const AUTO_SUBMIT: &str = "document.forms[0].submit()";

/// The page that takes a message to the IdP with SAML's HTTP-POST binding: a form that its
/// one script submits at once (a button does it where scripts are off). Its
/// `Content-Security-Policy` allows that script alone and posting only to the IdP's origin.
pub struct PostToIdp<'a> {
    /// The IdP endpoint the form posts to.
    pub action: &'a str,
    /// The form's fields (`SAMLRequest`, `RelayState`).
    pub fields: &'a [(&'static str, String)],
}

impl PostToIdp<'_> {
    /// The full HTML document.
    pub fn render(&self, request_id: &str) -> String {
        let body = html! {
            form method="post" action=(self.action) {
                @for (name, value) in self.fields {
                    input type="hidden" name=(name) value=(value);
                }
                noscript { p { "Scripts are off in this browser: continue by hand." } }
                button type="submit" { "Continue to sign-in" }
            }
            script { (PreEscaped(AUTO_SUBMIT)) }
        };
        shell("Signing in", "Taking you to sign-in…", body, request_id)
    }

    /// The policy for this page: nothing loads, the auto-submit script runs (by its hash),
    /// and the form may post to the IdP's origin only.
    pub fn content_security_policy(&self) -> String {
        let digest = openssl::sha::sha256(AUTO_SUBMIT.as_bytes());
        let hash = openssl::base64::encode_block(&digest);
        let target = url::Url::parse(self.action)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| "'none'".to_string());
        format!("default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; form-action {target}")
    }
}

/// The look shared by every gateway page (inline: pages load nothing from anywhere).
const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}\
main{max-width:36rem;margin:12vh auto;background:#fff;border-radius:10px;padding:2rem 2.5rem;box-shadow:0 2px 12px #0002}\
h1{font-size:1.4rem;margin:.2rem 0 1rem}.brand{color:#6b21a8;font-weight:700;letter-spacing:.05em}\
.code,.who{color:#667;font-size:.9rem}footer{margin-top:1.5rem;color:#667;font-size:.8rem}\
label{display:block;margin:.8rem 0}input{display:block;width:100%;box-sizing:border-box;padding:.5rem;margin-top:.3rem;border:1px solid #ccd;border-radius:6px}\
button{margin-top:1rem;padding:.55rem 1.2rem;border:0;border-radius:6px;background:#6b21a8;color:#fff;font-weight:600}\
[role=alert]{background:#fdecec;color:#8a1c1c;padding:.6rem .8rem;border-radius:6px}";

/// Every gateway page's frame: the brand, a heading, the page's own `body` and the request id
/// for the help desk.
pub fn shell(title: &str, heading: &str, body: Markup, request_id: &str) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Portcullis" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    div.brand { "PORTCULLIS" }
                    h1 { (heading) }
                    (body)
                    footer { "Request id: " code { (request_id) } }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_post_to_idp_page_carries_its_fields_and_allows_only_its_script_and_target() {
        let fields = [
            ("SAMLRequest", "PHg+\"<".to_string()),
            ("RelayState", "r1".to_string()),
        ];
        let page = PostToIdp {
            action: "https://idp.example:8443/sso/post?x=1",
            fields: &fields,
        };
        let html = page.render("id");
        assert!(
            html.contains(r#"<form method="post" action="https://idp.example:8443/sso/post?x=1">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"name="SAMLRequest" value="PHg+&quot;&lt;""#),
            "{html}"
        );
        assert!(
            html.contains("<script>document.forms[0].submit()</script>"),
            "{html}"
        );
        let csp = page.content_security_policy();
        assert!(
            csp.contains("form-action https://idp.example:8443"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        let script_src = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(!script_src.contains("unsafe"), "{csp}");
    }

    #[test]
    fn page_names_status_and_request_id_and_escapes_it() {
        let html = Page::BadGateway.render("<id>");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Error 502"));
        assert!(html.contains("<title>502 Application unreachable · Portcullis</title>"));
        assert!(html.contains("PORTCULLIS"));
        assert!(html.contains("&lt;id&gt;"));
        assert!(!html.contains("<id>"));
    }

    #[test]
    fn the_credential_form_escapes_what_it_shows() {
        let form = CredentialForm {
            app: "forms",
            summary: "Forms & <things>",
            action: "/.portcullis/credentials/forms",
            asks_username: true,
            failed: true,
            csrf: "tok\"en",
            return_to: "/a?b=1&c=2",
            signed_in_as: "ana@corp.example",
        };
        let html = form.render("r1");
        assert!(html.contains("<p>Forms &amp; &lt;things&gt;</p>"));
        assert!(html.contains("name=\"csrf\" value=\"tok&quot;en\""));
        assert!(html.contains("value=\"/a?b=1&amp;c=2\""));
        assert!(html.contains("name=\"username\""));
        assert!(html.contains("role=\"alert\""));
        let plain = CredentialForm {
            asks_username: false,
            failed: false,
            ..form
        }
        .render("r1");
        assert!(!plain.contains("name=\"username\""));
        assert!(!plain.contains("role=\"alert\""));
    }

    #[test]
    fn the_signed_in_user_is_named_and_escaped() {
        let html = Page::Forbidden.render_for("r1", Some("<script>x</script>@corp.example"));
        assert!(html.contains("Signed in as <b>&lt;script&gt;x&lt;/script&gt;@corp.example</b>"));
        assert!(html.contains("href=\"/.portcullis/logout\""));
        assert!(!Page::SignedOut.render("r1").contains("Error 200"));
    }
}
