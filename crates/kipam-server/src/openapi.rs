//! The OpenAPI 3 document of kipamd, assembled by utoipa from the handlers' annotations
//! and the `kipam-api` types, served at `/v1/openapi.json` and checked in as
//! `docs/openapi.json` (a test fails when that copy is stale; regenerate it with
//! `KIPAM_UPDATE_OPENAPI=1 cargo test -p kipam-server --test openapi`).
//!
//! Every operation gets the error answers any route can give (400, 401, 403, 404, 405,
//! 409, 413, 415, 422, 503, 504) with the one error body, added here rather than
//! repeated on each handler.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kipamd",
        description = "kipam's IPAM daemon: pools, allocations, prefix leases, external networks, overlaps, usage, address history, GC, the subnet planner and exhaustion forecasts. Errors are {\"error\": {\"code\", \"message\"}}. Address counts that may exceed 2^53 (size, free, reserved, leased) are decimal strings.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::pools::list,
        routes::pools::create,
        routes::pools::show,
        routes::pools::update,
        routes::pools::delete,
        routes::plan::forecast,
        routes::allocations::allocate,
        routes::allocations::list,
        routes::allocations::show,
        routes::allocations::release,
        routes::addresses::show,
        routes::prefixes::lease,
        routes::prefixes::list,
        routes::prefixes::release,
        routes::externals::list,
        routes::externals::add,
        routes::externals::remove,
        routes::overlaps::list,
        routes::usage::report,
        routes::plan::plan,
        routes::gc::report,
        routes::gc::pending,
    ),
    components(schemas(kipam_api::ErrorBody, kipam_api::ErrorCode)),
    modifiers(&Common),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of the tokens file (roles viewer < allocator < admin). Not needed on the unix socket (trusted as allocator) nor on loopback TCP when kipamd runs without --tokens (trusted as admin).",
                    ))
                    .build(),
            ),
        );
        let errors = [
            (
                "400",
                "bad request: malformed body or query, or an invalid field (named in `field`)",
            ),
            ("401", "no token, or an unknown one"),
            ("403", "the token's role may not do this"),
            ("404", "no such pool, handle, lease, network or route"),
            ("405", "method not allowed on this route"),
            (
                "409",
                "conflict: exists already, overlaps (named in `conflict`), in use",
            ),
            ("413", "body larger than 1 MiB"),
            ("415", "body is not application/json"),
            (
                "422",
                "exhausted, a plan that cannot fit (`infeasible`), or a body of valid JSON with a wrong field",
            ),
            (
                "503",
                "not ready (loading), store failure, or shutting down",
            ),
            ("504", "the request took longer than the request timeout"),
        ];
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, desc) in errors {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(desc)
                                    .content(
                                        "application/json",
                                        ContentBuilder::new()
                                            .schema(Some(RefOr::Ref(
                                                utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                                            )))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    // The document describes the protocol, not a build: keep it stable across versions.
    doc.info.version = "v1".into();
    let mut s = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
