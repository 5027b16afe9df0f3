//! Where the API is, who asks (`--api`, `--token`, `--ca-cert`), and one call through the
//! API's client.

use alcubierre_api::client::Client;
use serde_json::Value;

/// Where the API is and the token to use.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// API base URL.
    #[arg(
        long,
        env = "ALCUBIERRE_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api: String,
    /// Bearer token.
    #[arg(
        long,
        env = "ALCUBIERRE_TOKEN",
        default_value = "",
        global = true,
        hide_env_values = true
    )]
    token: String,
    /// CA certificates (PEM) to verify an https:// API (default: the system bundle).
    #[arg(long, env = "ALCUBIERRE_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
}

impl ApiArgs {
    /// The API client these arguments name.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(
            &self.api,
            &self.token,
            self.ca_cert.as_deref(),
        )?)
    }
}

/// One request; returns the JSON body of a 2xx answer (null for none), or the API's error
/// message.
pub fn request(
    a: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    Ok(a.client()?.call(method, path, body)?)
}
