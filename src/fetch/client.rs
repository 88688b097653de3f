//! The one HTTP client a run shares: connection pool, timeouts, redirects, TLS, proxy, and
//! name resolution (`resolve`).

use std::sync::Arc;

use url::Url;

use super::resolve::SystemResolver;
use crate::error::{Error, SettingsError};
use crate::profile::HostProfile;
use crate::settings::{Proxy, Settings};

/// How long an idle connection stays in the pool (reqwest's default is 90 s).
pub(crate) const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Build the one HTTP client a run shares (connection pool, timeouts, redirects, TLS, proxy).
///
/// Redirects are not followed by the client: `attempt` follows them itself (see `redirect`),
/// so that every credential header, not only the three reqwest knows, stays with its origin,
/// and no `Referer` is sent.
/// Host profiles with a `proxy` of their own get one more client per distinct proxy (see
/// [`Clients`]).
pub(crate) fn client(settings: &Settings) -> Result<Clients, Error> {
    if settings.insecure {
        tracing::warn!(
            "--insecure: TLS certificates are NOT verified; anyone on the path can read and change these requests"
        );
    }
    let main = build(settings, settings.proxy.as_ref())?;
    let mut by_proxy: Vec<(Proxy, reqwest::Client)> = Vec::new();
    for proxy in settings.profiles.iter().filter_map(|p| p.proxy.as_ref()) {
        if !by_proxy.iter().any(|(p, _)| p == proxy) {
            by_proxy.push((proxy.clone(), build(settings, Some(proxy))?));
        }
    }
    Ok(Clients {
        main,
        by_proxy,
        profiles: settings.profiles.clone(),
    })
}

/// The run's HTTP clients: the one for every request, and one per distinct proxy of the host
/// profiles (reqwest fixes a client's proxies when it is built, and one proxy function for
/// all would switch off its own `HTTP_PROXY`/`NO_PROXY` handling for every other host). At
/// most one per profile, built at the start.
pub(crate) struct Clients {
    main: reqwest::Client,
    by_proxy: Vec<(Proxy, reqwest::Client)>,
    /// The run's host profiles, the one copy requests look theirs up in (the per-profile
    /// `Settings` of the scheduler carry none).
    profiles: Vec<HostProfile>,
}

impl Clients {
    /// The client for a request (or redirect hop) to `url`: its host profile's proxy's, if it
    /// has one, else the run's.
    pub(crate) fn for_url(&self, url: &Url) -> &reqwest::Client {
        if self.by_proxy.is_empty() {
            return &self.main;
        }
        let proxy = self.profile_for(url).and_then(|p| p.proxy.as_ref());
        match proxy {
            Some(proxy) => self
                .by_proxy
                .iter()
                .find(|(p, _)| p == proxy)
                .map_or(&self.main, |(_, c)| c),
            None => &self.main,
        }
    }
}

impl Clients {
    /// The host profile of `url`'s host, if one matches (none without profiles, at once).
    pub(crate) fn profile_for(&self, url: &Url) -> Option<&HostProfile> {
        if self.profiles.is_empty() {
            return None;
        }
        let host = url.host_str()?;
        crate::profile::most_specific(&self.profiles, host).map(|(_, p)| p)
    }
}

/// One client, through `proxy` (else the proxy environment variables).
fn build(settings: &Settings, proxy: Option<&Proxy>) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .pool_max_idle_per_host(settings.concurrency.get())
        // A host's last known request closes its connection (`Connection: close`, see
        // `fetch::attempt`), and only a few hosts keep one while that is not known yet (see
        // `scheduler::reuse`); this cleans up after those: idle for 10 s, a connection is
        // history.
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
    if let Some(proxy) = proxy {
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
