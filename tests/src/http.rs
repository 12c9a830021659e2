//! A small HTTP/1.1 client for talking to the wiki the way the load balancer does
//! (hyper-util's client, the same hyper stack as the AWS SDK), with a cookie jar, MediaWiki
//! API helpers and `multipart/form-data` uploads (hyper-multipart-rfc7578).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use hyper_multipart_rfc7578::client::multipart;

/// How long a request may wait for the response head.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client for one origin (`http://127.0.0.1:<port>`), sending fixed extra headers
/// (e.g. `Host`, `X-Forwarded-Proto`) and keeping cookies.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<(String, String)>,
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Http {
    /// A client for `base` (scheme, host and port; no trailing slash).
    pub fn new(base: impl Into<String>) -> Http {
        Http {
            // A connection per request: the sandbox's load balancer forwards whole connections,
            // so a kept-alive one would stay on a task that is being replaced.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
            base: base.into(),
            headers: Vec::new(),
            cookies: Vec::new(),
        }
    }

    /// Sends `name: value` with every request.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Http {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// Sends one request; `Err` when the server cannot be reached.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header(COOKIE, c.join("; "));
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("{method} {path}: no answer in {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for v in headers.get_all(SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(n, _)| n != name);
                if value != "deleted" && !value.is_empty() {
                    self.cookies.push((name.to_string(), value.to_string()));
                }
            }
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Response, String> {
        self.send("GET", path, None, Bytes::new()).await
    }

    /// `POST path` with a form body.
    pub async fn post_form(
        &mut self,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> Result<Response, String> {
        self.send(
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            Bytes::from(form(pairs)),
        )
        .await
    }

    /// `POST path` with a `multipart/form-data` body (a file upload).
    pub async fn post_multipart(
        &mut self,
        path: &str,
        form: multipart::Form<'static>,
    ) -> Result<Response, String> {
        let content_type = form.content_type();
        let body = form
            .set_body::<multipart::Body>(Request::post(path))
            .map_err(|e| format!("multipart body: {e}"))?
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("multipart body: {e}"))?
            .to_bytes();
        self.send("POST", path, Some(&content_type), body).await
    }

    /// A MediaWiki API query (`/api.php?…&format=json`); `Err` unless 200 with JSON.
    pub async fn api_get(&mut self, query: &[(&str, &str)]) -> Result<Value, String> {
        let mut q = query.to_vec();
        q.push(("format", "json"));
        let r = self.get(&format!("/api.php?{}", form(&q))).await?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.text()));
        }
        r.json()
    }

    /// A MediaWiki API action by POST; `Err` unless 200 with JSON.
    pub async fn api_post(&mut self, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut p = params.to_vec();
        p.push(("format", "json"));
        let r = self.post_form("/api.php", &p).await?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.text()));
        }
        r.json()
    }

    /// A MediaWiki token of `kind` (`csrf`, `login`, …).
    pub async fn token(&mut self, kind: &str) -> Result<String, String> {
        let v = self
            .api_get(&[("action", "query"), ("meta", "tokens"), ("type", kind)])
            .await?;
        v["query"]["tokens"][format!("{kind}token")]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no {kind} token: {v}"))
    }
}
