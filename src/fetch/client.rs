//! The one HTTP client a run shares: connection pool, timeouts, redirects, TLS, proxy, and
//! name resolution (`resolve`).

use std::sync::Arc;

use super::resolve::SystemResolver;
use crate::error::{Error, SettingsError};
use crate::settings::Settings;

/// How long an idle connection stays in the pool (reqwest's default is 90 s).
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Build the one HTTP client a run shares (connection pool, timeouts, redirects, TLS, proxy).
///
/// Redirects are not followed by the client: `attempt` follows them itself (see `redirect`),
/// so that every credential header, not only the three reqwest knows, stays with its origin,
/// and no `Referer` is sent.
pub(crate) fn client(settings: &Settings) -> Result<reqwest::Client, Error> {
    if settings.insecure {
        tracing::warn!(
            "--insecure: TLS certificates are NOT verified; anyone on the path can read and change these requests"
        );
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .pool_max_idle_per_host(settings.concurrency.get())
        // A host's last known request closes its connection (`Connection: close`, see
        // `fetch::attempt`); this cleans up after the ones no request could know were last
        // (those started before the input was read): idle for 10 s, a connection is history.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        // fetchall retries by its own rules (retry.rs), each retry paced by the gate; reqwest's
        // own retry layer (HTTP/2 refusals, with a budget to keep) would retry behind its back.
        .retry(reqwest::retry::never())
        .tcp_nodelay(true)
        .danger_accept_invalid_certs(settings.insecure)
        .dns_resolver(Arc::new(SystemResolver));
    // Without --proxy, reqwest reads HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY itself;
    // an explicit proxy replaces those, but NO_PROXY still applies to it (as with curl).
    if let Some(proxy) = &settings.proxy {
        let proxy = reqwest::Proxy::all(proxy.url().clone())
            .map_err(|e| {
                let message = super::classify::chain_message(&e);
                let redactor = crate::redact::Redactor::default();
                SettingsError::new("proxy", redactor.message(message, &[proxy.url()]))
            })?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    // --cacert: these roots only, as curl does; the system's roots are neither loaded nor
    // trusted.
    if let Some(ca) = &settings.ca_certs {
        builder = builder.tls_certs_only(ca.certs().iter().cloned());
    }
    builder.build().map_err(Error::Client)
}
