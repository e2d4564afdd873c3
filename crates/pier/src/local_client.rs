//! The API client of `pier server`'s own components (the node agent and the controllers): a
//! `kube::Client` whose requests go straight to the API server's router in this process.
//!
//! They used to reach it like any client, over TLS on loopback: each request was encrypted,
//! framed as HTTP/1.1, sent through the kernel and parsed back, in the same process, and every
//! connection the client's pool opened under load cost a TLS handshake on both ends. When many
//! pods start at once (each one a few status writes and watch events) that was a fifth of the
//! server's CPU. Here a request is handed to the router as it is; everything else — kube's
//! request building, the handlers, the bodies and watch streams — is the same code as over the
//! network. It carries the same bearer token, so the server authorizes it like any other.
//!
//! `kube` has no in-process transport; `Client::new` takes any `tower::Service`, which is what
//! this module builds. Upgrades (exec, attach, port-forward) need a real connection and are not
//! supported; the in-process components do not use them.

use std::convert::Infallible;

use axum::body::Body;
use http::header::{AUTHORIZATION, HeaderValue};
use http::{Request, Response};
use tower::ServiceExt;

/// A client of `router` that presents `token`.
pub fn client(router: axum::Router, token: &str) -> anyhow::Result<kube::Client> {
    let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
    bearer.set_sensitive(true);
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let router = router.clone();
        let bearer = bearer.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.headers.insert(AUTHORIZATION, bearer);
            let response: Response<Body> = router.oneshot(Request::from_parts(parts, Body::new(body))).await?;
            Ok::<_, Infallible>(response)
        }
    });
    Ok(kube::Client::new(service, "default"))
}
