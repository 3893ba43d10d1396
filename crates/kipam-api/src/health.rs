//! Health and readiness answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz`, `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `ok` (alive) or `ready`.
    pub status: String,
}
