//! The one HTTP client the gateway uses to talk to identity providers.
//!
//! Built in one place (see `clippy.toml`): no redirects followed (a provider never needs one
//! for back-channel calls, and following them invites SSRF), connect and total timeouts, and
//! a cap on response size. Adapts reqwest to the `openidconnect` crate's client interface.

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use thiserror::Error;

/// Largest IdP response read (discovery documents and JWKS are a few KiB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A back-channel call to the IdP failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Request(String),
    /// Connecting, sending or reading failed (including timeouts).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The response body was larger than allowed.
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The response could not be turned back into an HTTP response value.
    #[error("invalid response: {0}")]
    Response(String),
}

/// HTTP client for IdP back-channel calls (discovery, JWKS, token, userinfo).
#[derive(Debug, Clone)]
pub struct IdpHttpClient {
    client: reqwest::Client,
    /// The IdP's configured name (metrics).
    idp: std::sync::Arc<str>,
}

impl IdpHttpClient {
    /// A client for IdP `idp` with the gateway's outbound rules: no redirects, bounded time.
    /// `extra_ca` (PEM) is trusted besides the system's CAs.
    pub fn new(
        idp: &str,
        connect_timeout: Duration,
        total_timeout: Duration,
        extra_ca: Option<&[u8]>,
    ) -> Result<Self, HttpError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(total_timeout)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            client: builder.build()?,
            idp: idp.into(),
        })
    }

    /// A plain GET (e.g. SAML metadata): status and body, with the same limits. `call` names
    /// it in metrics (discovery, jwks, metadata).
    pub async fn get(&self, call: &'static str, url: &str) -> Result<(u16, Vec<u8>), HttpError> {
        let request = http::Request::get(url)
            .body(Vec::new())
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let response = self.call_as(call, request).await?;
        Ok((response.status().as_u16(), response.into_body()))
    }

    /// Sends `request`, timed in metrics as `call` (e.g. userinfo, introspection).
    pub async fn call_as(
        &self,
        call: &'static str,
        request: HttpRequest,
    ) -> Result<HttpResponse, HttpError> {
        let started = std::time::Instant::now();
        let answer = self.send(request).await;
        crate::metrics::idp_call(&self.idp, call, started.elapsed(), answer.is_ok());
        answer
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request =
            reqwest::Request::try_from(request).map_err(|e| HttpError::Request(e.to_string()))?;
        let mut response = self.client.execute(request).await?;
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| HttpError::Response(e.to_string()))
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        // The openidconnect crate's own calls: discovery (the document, then the JWKS) and
        // the token endpoint.
        let call = if request.method() == http::Method::POST {
            "token"
        } else if request
            .uri()
            .path()
            .ends_with("/.well-known/openid-configuration")
        {
            "discovery"
        } else {
            "jwks"
        };
        Box::pin(self.call_as(call, request))
    }
}
