//! The dashboard at `/`: one self-contained HTML page (no CDN, no external assets) that
//! reads `/v1/usage` and shows pools and their utilization.

use axum::response::Html;

const PAGE: &str = include_str!("dashboard.html");

/// The dashboard page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
