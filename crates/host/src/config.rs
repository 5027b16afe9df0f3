//! The agent's configuration: `/etc/alcubierre/node.toml`, with command-line flags over it.
//!
//! ```toml
//! api = ["https://10.0.0.11:8080", "https://10.0.0.12:8080"]  # every node's API; tried in turn
//! token_file = "/etc/alcubierre/token"   # or token = "..."
//! ca_cert = "/etc/alcubierre/ca.pem"     # for https:// (default: the system's CAs)
//! host = "compute-7"                      # the host's name in the cluster (default: hostname)
//! protocol = "nvme-tcp"                   # or "iscsi": what attach uses without --protocol
//! state_dir = "/var/lib/alcubierre-node"
//! interval_ms = 2000                      # the daemon's round (100 to 5000)
//! chap_secret_file = "/etc/alcubierre/chap"  # iSCSI: the secret of the host's CHAP user
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Protocol, Result};

/// The default configuration file.
pub const DEFAULT_FILE: &str = "/etc/alcubierre/node.toml";
/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/alcubierre-node";

/// The file's contents.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The API's URLs.
    #[serde(default)]
    pub api: Vec<String>,
    /// The API token.
    pub token: Option<String>,
    /// A file holding the API token.
    pub token_file: Option<PathBuf>,
    /// The CA bundle an https:// API is verified with.
    pub ca_cert: Option<PathBuf>,
    /// The host's name in the cluster.
    pub host: Option<String>,
    /// What attach uses without --protocol.
    pub protocol: Option<String>,
    /// The state directory.
    pub state_dir: Option<PathBuf>,
    /// The daemon's round in milliseconds.
    pub interval_ms: Option<u64>,
    /// A file holding the secret of the host's iSCSI CHAP user.
    pub chap_secret_file: Option<PathBuf>,
}

/// The configuration in effect.
#[derive(Clone, Debug)]
pub struct Config {
    /// The API's URLs, tried in turn.
    pub api: Vec<String>,
    /// The API token.
    pub token: String,
    /// The CA bundle for https://.
    pub ca_cert: Option<PathBuf>,
    /// The host's name, when configured.
    pub host: Option<String>,
    /// The default protocol.
    pub protocol: Protocol,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The daemon's round in milliseconds (100 to 5000).
    pub interval_ms: u64,
    /// The iSCSI CHAP secret's file.
    pub chap_secret_file: Option<PathBuf>,
}

/// What the command line gave.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// The configuration file (`None`: [`DEFAULT_FILE`] when it exists).
    pub config: Option<PathBuf>,
    /// `--api`, over the file's.
    pub api: Vec<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--host`.
    pub host: Option<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
}

impl Config {
    /// The configuration from `flags` over the file.
    pub fn load(flags: &Flags) -> Result<Self> {
        let file = match &flags.config {
            Some(p) => read(p)?,
            None if Path::new(DEFAULT_FILE).exists() => read(Path::new(DEFAULT_FILE))?,
            None => File::default(),
        };
        Self::merge(file, flags)
    }

    /// `flags` over `file`, checked.
    pub fn merge(file: File, flags: &Flags) -> Result<Self> {
        let api = if flags.api.is_empty() {
            file.api
        } else {
            flags.api.clone()
        };
        let api: Vec<String> = api
            .iter()
            .flat_map(|a| a.split(','))
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if api.is_empty() {
            return Err(Error::Invalid(format!(
                "api: no API address; give --api URL or set api = [\"https://node:8080\"] in {DEFAULT_FILE}"
            )));
        }
        let token = match (&flags.token, &file.token, &file.token_file) {
            (Some(t), _, _) => t.clone(),
            (None, Some(t), _) => t.clone(),
            (None, None, Some(p)) => std::fs::read_to_string(p)
                .map_err(|e| Error::io("token_file: reading the API token", p, e))?
                .trim()
                .to_string(),
            (None, None, None) => {
                return Err(Error::Invalid(format!(
                    "token: no API token; give --token, or set token_file in {DEFAULT_FILE}"
                )))
            }
        };
        if token.is_empty() {
            return Err(Error::Invalid("token: the API token is empty".into()));
        }
        let protocol = match file.protocol.as_deref() {
            None => Protocol::NvmeTcp,
            Some(p) => p
                .parse()
                .map_err(|e: Error| Error::Invalid(format!("protocol: {e}")))?,
        };
        let interval_ms = file.interval_ms.unwrap_or(2000);
        if !(100..=5_000).contains(&interval_ms) {
            return Err(Error::Invalid(format!(
                "interval_ms: {interval_ms} is out of range (100 to 5000: a lost path must be \
                 connected again well within the cluster's 10 s host liveness timeout)"
            )));
        }
        Ok(Self {
            api,
            token,
            ca_cert: file.ca_cert,
            host: flags.host.clone().or(file.host),
            protocol,
            state_dir: flags
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            interval_ms,
            chap_secret_file: file.chap_secret_file,
        })
    }
}

fn read(p: &Path) -> Result<File> {
    let text =
        std::fs::read_to_string(p).map_err(|e| Error::io("reading the configuration", p, e))?;
    toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<File> {
        toml::from_str(s).map_err(|e| Error::Invalid(e.to_string()))
    }

    #[test]
    fn flags_override_the_file_and_mistakes_name_the_key() {
        let f = parse("api = [\"http://a:1\"]\ntoken = \"t\"\nprotocol = \"iscsi\"\n").unwrap();
        let c = Config::merge(f.clone(), &Flags::default()).unwrap();
        assert_eq!(
            (c.api.clone(), c.protocol),
            (vec!["http://a:1".into()], Protocol::Iscsi)
        );
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let flags = Flags {
            api: vec!["http://b:1,http://c:1".into()],
            token: Some("u".into()),
            ..Flags::default()
        };
        let c = Config::merge(f, &flags).unwrap();
        assert_eq!(c.api, vec!["http://b:1", "http://c:1"]);
        assert_eq!(c.token, "u");

        let e = parse("apii = []").unwrap_err().to_string();
        assert!(e.contains("apii"), "{e}");
        let e = Config::merge(parse("token = \"t\"").unwrap(), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("api:"), "{e}");
        let e = Config::merge(parse("api = [\"http://a:1\"]").unwrap(), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("token:"), "{e}");
        let e = Config::merge(
            parse("api = [\"http://a:1\"]\ntoken = \"t\"\nprotocol = \"fc\"").unwrap(),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("protocol:"), "{e}");
        let e = Config::merge(
            parse("api = [\"http://a:1\"]\ntoken = \"t\"\ninterval_ms = 5").unwrap(),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("interval_ms:"), "{e}");
    }
}
