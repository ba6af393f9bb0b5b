//! The web UI: static pages and assets compiled into the binary (no CDN, no build step), served
//! under `/ui/`, and the session endpoint that turns a token into an HttpOnly cookie so the
//! pages never carry a token in a URL. The pages read everything through the public API.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::Caller;
use crate::AppState;

/// Scripts and styles only from this server; the websocket to the same host.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// (name, content type, body) of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("ui/style.css")),
    ("job.js", "text/javascript; charset=utf-8", include_str!("ui/job.js")),
    ("output_view.js", "text/javascript; charset=utf-8", include_str!("ui/output_view.js")),
    ("terminal.js", "text/javascript; charset=utf-8", include_str!("ui/terminal.js")),
    ("common.js", "text/javascript; charset=utf-8", include_str!("ui/common.js")),
    ("project.js", "text/javascript; charset=utf-8", include_str!("ui/project.js")),
    ("home.js", "text/javascript; charset=utf-8", include_str!("ui/home.js")),
];

const JOB_PAGE: &str = include_str!("ui/job.html");
const PROJECT_PAGE: &str = include_str!("ui/project.html");
const HOME_PAGE: &str = include_str!("ui/home.html");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/ui/") }))
        .route("/ui", get(|| async { axum::response::Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { page(HOME_PAGE) }))
        .route("/ui/jobs/{job}", get(job_page))
        .route("/ui/projects/{vcs}/{org}/{repo}", get(project_page))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/session", post(start_session).delete(end_session))
}

fn page(body: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (headers, body).into_response()
}

/// The job page; which job it shows is read from its URL by the script.
async fn job_page(Path(_job): Path<String>) -> Response {
    page(JOB_PAGE)
}

/// A project's page (recent jobs, insights); the script reads the project from its URL.
async fn project_page() -> Response {
    page(PROJECT_PAGE)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            (headers, *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// `POST /ui/session` with `Authorization: Bearer <token>`: a valid token comes back as an
/// HttpOnly, SameSite=Strict cookie that the API and websocket tails accept, so the page's
/// script never holds it after this call and it is never in a URL.
async fn start_session(Caller(claims): Caller, headers: HeaderMap) -> Response {
    let Some(token) = crate::auth::token_of(&headers) else { return StatusCode::UNAUTHORIZED.into_response() };
    let secure = headers.get("x-forwarded-proto").is_some_and(|p| p == "https");
    // The cookie lasts as long as the token (a session cookie for tokens that never expire).
    let max_age = claims.exp.map(|exp| format!("; Max-Age={}", exp.saturating_sub(tailrace_storage::meta::now_ms() / 1000))).unwrap_or_default();
    let cookie = format!("tailrace_token={token}; Path=/; HttpOnly; SameSite=Strict{max_age}{}", if secure { "; Secure" } else { "" });
    match HeaderValue::from_str(&cookie) {
        Ok(v) => (StatusCode::NO_CONTENT, [(SET_COOKIE, v)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "token is not a valid cookie value\n").into_response(),
    }
}

/// `DELETE /ui/session`: forgets the cookie.
async fn end_session() -> Response {
    (StatusCode::NO_CONTENT, [(SET_COOKIE, HeaderValue::from_static("tailrace_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"))]).into_response()
}
