//! Name resolution for the HTTP client.
//!
//! Special-use names are answered here, as RFC 6761 asks of resolver APIs: `*.invalid` never
//! resolves and `localhost` / `*.localhost` are the loopback addresses. Neither is sent to a
//! DNS server. Everything else goes to the system resolver (getaddrinfo on tokio's blocking
//! pool), exactly as reqwest would do by default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The resolver fetchall's client uses.
#[derive(Debug, Default, Clone)]
pub(super) struct SystemResolver;

/// A name that does not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve host `{host}`: {reason}")]
pub(super) struct DnsError {
    pub host: String,
    pub reason: String,
}

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if host == "invalid" || host.ends_with(".invalid") {
                return Err(DnsError {
                    host,
                    reason: "the .invalid domain never resolves (RFC 6761)".to_owned(),
                }
                .into());
            }
            if host == "localhost" || host.ends_with(".localhost") {
                let addrs = [
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
                ];
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let looked_up = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map(|addrs| addrs.collect::<Vec<SocketAddr>>());
            match looked_up {
                Ok(addrs) => {
                    if addrs.is_empty() {
                        return Err(DnsError {
                            host,
                            reason: "no addresses".to_owned(),
                        }
                        .into());
                    }
                    Ok(Box::new(addrs.into_iter()) as Addrs)
                }
                Err(e) => Err(DnsError {
                    host,
                    reason: e.to_string(),
                }
                .into()),
            }
        })
    }
}
