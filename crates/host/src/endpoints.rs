//! The cluster's API at several endpoints (every node's): a call goes to the endpoint that
//! answered last, and on to the next when it does not answer or cannot serve.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alcubierre_api::client::{Client, ClientError};

use crate::config::Config;
use crate::{Error, Result};

/// The cluster's API at several endpoints: a call goes to the one that answered last, and to
/// the next when it does not answer.
pub struct Api {
    clients: Vec<Client>,
    at: AtomicUsize,
}

impl Api {
    /// Clients of every URL in `cfg.api`, each call giving up after `timeout`.
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Self> {
        let clients = cfg
            .api
            .iter()
            .map(|u| Client::with_timeout(u, &cfg.token, cfg.ca_cert.as_deref(), timeout))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            clients,
            at: AtomicUsize::new(0),
        })
    }

    /// `f` on the endpoint that answered last, then on the others in turn while none answers.
    pub fn call<T>(&self, f: impl Fn(&Client) -> std::result::Result<T, ClientError>) -> Result<T> {
        let start = self.at.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..self.clients.len() {
            let i = (start + k) % self.clients.len();
            match f(&self.clients[i]) {
                // No answer, or a node that cannot serve (no quorum, its store unreachable):
                // the next endpoint may.
                Err(e) if e.status.is_none_or(|s| s >= 500) => last = Some(e),
                r => {
                    self.at.store(i, Ordering::Relaxed);
                    return r.map_err(Error::Api);
                }
            }
        }
        let e = last.expect("at least one endpoint");
        if e.status.is_some() {
            return Err(Error::Api(e));
        }
        Err(Error::Api(ClientError {
            message: format!(
                "no API endpoint answered ({}); last: {}",
                self.clients
                    .iter()
                    .map(Client::base)
                    .collect::<Vec<_>>()
                    .join(", "),
                e.message
            ),
            ..e
        }))
    }
}
