//! The API's errors as gRPC statuses, and calls to the blocking API client off the async
//! workers.

use std::sync::Arc;

use alcubierre_api::client::{Client, ClientError};
use alcubierre_host::endpoints::Api;
use tonic::{Code, Status};

/// The API's error as the status the CSI specification expects; `what` says what the call was
/// doing.
pub fn from_api(what: &str, e: &ClientError) -> Status {
    let code = match e.status {
        None => Code::Unavailable,
        Some(400) | Some(415) | Some(422) => Code::InvalidArgument,
        Some(401) | Some(403) => Code::Unauthenticated,
        Some(404) => Code::NotFound,
        Some(409) => Code::FailedPrecondition,
        Some(413) | Some(507) => Code::ResourceExhausted,
        Some(503) => Code::Unavailable,
        Some(_) => Code::Internal,
    };
    let hint = match code {
        Code::Unavailable => {
            "; the cluster's API did not answer: check the driver's --api and the nodes"
        }
        Code::Unauthenticated => "; check the driver's API token (its Secret)",
        _ => "",
    };
    Status::new(code, format!("{what}: {}{hint}", e.message))
}

/// An invalid argument naming `field`.
pub fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// Runs `f` on the cluster's API off the async workers: on the endpoint that answered last,
/// then on the next ones while none answers or one cannot serve (5xx).
pub async fn api<T: Send + 'static>(
    client: &Arc<Api>,
    what: &str,
    f: impl Fn(&Client) -> Result<T, ClientError> + Send + 'static,
) -> Result<T, Status> {
    let c = client.clone();
    tokio::task::spawn_blocking(move || c.call(f))
        .await
        .map_err(|e| Status::internal(format!("{what}: {e}")))?
        .map_err(|e| match e {
            alcubierre_host::Error::Api(a) => from_api(what, &a),
            other => Status::internal(format!("{what}: {other}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_answers_map_to_the_specifications_codes() {
        let e = |status| ClientError {
            status,
            message: "m".into(),
            field: None,
        };
        for (s, code) in [
            (None, Code::Unavailable),
            (Some(400), Code::InvalidArgument),
            (Some(401), Code::Unauthenticated),
            (Some(404), Code::NotFound),
            (Some(409), Code::FailedPrecondition),
            (Some(503), Code::Unavailable),
            (Some(500), Code::Internal),
        ] {
            let st = from_api("creating volume v", &e(s));
            assert_eq!(st.code(), code, "{s:?}");
            assert!(st.message().starts_with("creating volume v: m"), "{st:?}");
        }
        assert!(from_api("x", &e(None)).message().contains("--api"));
    }
}
