//! Version 1 of the REST API, served under `/api/v1`.

mod attach;
mod paths;
mod types;

pub use attach::*;
pub use types::*;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

/// Adds the bearer token scheme every operation but the open ones needs.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document's frame: title, version, authentication.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Alcubierre API",
        version = "1",
        description = "The REST API of an Alcubierre cluster. Every operation but the open ones \
                       (this document, /metrics, the console) needs `Authorization: Bearer \
                       <token>`. Errors are JSON `{\"error\": ..., \"field\": ...}` with the \
                       status that fits."
    ),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct Frame;

/// The OpenAPI document of `/api/v1`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Frame::openapi();
    doc.merge(paths::Operations::openapi());
    doc
}
