//! The REST API's contract: the request and response types of `/api/v1` ([`v1`]) and the
//! OpenAPI document generated from them ([`v1::openapi`]). The control plane serves it
//! (`alcubierre_control::api`), the CLI and the integrations call it. The document is checked
//! in at `docs/api/openapi.json`; a test fails when it differs from the generated one
//! (`ALCUBIERRE_BLESS=1 cargo test -p alcubierre-api` writes it).
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod v1;

/// The OpenAPI document as served and checked in: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut s = v1::openapi()
        .to_pretty_json()
        .expect("the document serialises");
    s.push('\n');
    s
}

/// Every operation's method and path (axum syntax), from the document.
pub fn routes() -> Vec<(String, String)> {
    let doc = v1::openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ];
        for (m, op) in ops {
            if op.is_some() {
                out.push((m.to_string(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api/openapi.json");

    /// The checked-in document is the generated one: a type or an operation changed without
    /// regenerating it fails here (`ALCUBIERRE_BLESS=1` regenerates it).
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let generated = openapi_json();
        if std::env::var_os("ALCUBIERRE_BLESS").is_some() {
            std::fs::write(CHECKED_IN, &generated).expect("writing docs/api/openapi.json");
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/api/openapi.json differs from the document the API's types generate; run \
             `ALCUBIERRE_BLESS=1 cargo test -p alcubierre-api` and commit the result"
        );
    }

    #[test]
    fn every_operation_needs_the_token_but_the_open_ones() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));
        let mut open = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (m, op) in item.as_object().unwrap() {
                if op.get("security") == Some(&serde_json::json!([{}])) {
                    open.push(format!("{} {path}", m.to_uppercase()));
                }
            }
        }
        open.sort();
        assert_eq!(open, ["GET /", "GET /api/v1/openapi.json", "GET /metrics"]);
    }
}
