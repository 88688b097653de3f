//! Shards: which lines of a list one of N cooperating processes fetches (`--shard K/N`).
//!
//! A line belongs to shard `fnv1a64(host key) mod N`, where the host key is the one the
//! per-host limits use (`scheme://host:port`, see `limit::HostKey`), so every line of one host
//! lands in one shard and per-host politeness stays exact without any coordination. The hash
//! is FNV-1a, 64 bits, over the key's UTF-8 bytes: written out here (not `std`'s `Hasher`,
//! whose output may change between Rust versions), so it gives the same shard on every
//! platform and every version; docs/scale-out.md gives test vectors. A line that is not a
//! request (an invalid URL or spec) has no host: it belongs to shard 0, so that exactly one
//! shard writes its record. This module only assigns lines; skipping them is the scheduler's.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use url::Url;

/// FNV-1a's 64-bit offset basis and prime (http://www.isthe.com/chongo/tech/comp/fnv/).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits, of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The host key of `url` (an http or https URL): `scheme://host:port`, the port made explicit.
/// It is what the per-host limits key on (`limit::HostKey`, which says why) and what a
/// shard hashes: written once, here, so the two can never disagree.
///
/// Built by hand rather than with `format!`: it runs for every request, and the formatting
/// machinery cost about 1,300 instructions of the ~93,000 a request takes (callgrind,
/// docs/performance.md).
pub(crate) fn host_key(url: &Url) -> String {
    let scheme = url.scheme();
    let host = url.host_str().unwrap_or("");
    let port = url.port_or_known_default().unwrap_or(0);
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = port;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut key = String::with_capacity(scheme.len() + 3 + host.len() + 1 + digits.len() - at);
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(host);
    key.push(':');
    key.extend(digits[at..].iter().map(|&d| char::from(d)));
    key
}

/// Shard `index` of `count` (`--shard K/N`): `index < count`, as the constructor checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: NonZeroU32,
}

impl Shard {
    /// Shard `index` of `count`; an error (saying why) unless `index < count` and `count > 0`.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        let count = NonZeroU32::new(count).ok_or("the shard count N must be at least 1")?;
        if index >= count.get() {
            return Err(format!(
                "the shard index K must be below the count N (0 <= K < N), got {index}/{count}"
            ));
        }
        Ok(Shard { index, count })
    }

    /// K, this process's shard (0-based).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// N, the number of shards.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The shard a host key (`scheme://host:port`) belongs to among `self.count()`.
    pub(crate) fn of_host(&self, host_key: &str) -> u32 {
        // The remainder is below `count`, a u32, so it fits.
        (fnv1a64(host_key.as_bytes()) % u64::from(self.count.get())) as u32
    }

    /// Whether a line of host `host_key` (`None`: a line that is not a request) is ours.
    pub(crate) fn owns(&self, host_key: Option<&str>) -> bool {
        match host_key {
            Some(key) => self.of_host(key) == self.index,
            None => self.index == 0,
        }
    }

    /// Whether a line with the request URL `url` (`None`: a line that is not a request) is
    /// ours: the test the progress total (`count`) applies, as the scheduler does with the
    /// host key it keeps.
    pub(crate) fn owns_url(&self, url: Option<&Url>) -> bool {
        self.owns(url.map(host_key).as_deref())
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N`, as `--shard` takes it.
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .trim()
            .split_once('/')
            .ok_or("expected K/N (shard K of N, 0-based: 0/4 .. 3/4) or auto")?;
        let number = |t: &str, what: &str| {
            t.trim().parse::<u32>().map_err(|_| {
                format!(
                    "{what} is not a whole number: `{}`",
                    crate::redact::bounded(t, 24)
                )
            })
        };
        Shard::new(number(k, "K")?, number(n, "N")?)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_writes_every_port_in_full() {
        let key = |s: &str| host_key(&Url::parse(s).unwrap());
        assert_eq!(key("http://a.test:1/"), "http://a.test:1");
        assert_eq!(key("http://a.test:10/"), "http://a.test:10");
        assert_eq!(key("https://a.test/"), "https://a.test:443");
        assert_eq!(key("http://a.test:65535/x"), "http://a.test:65535");
        assert_eq!(key("http://[::1]:8080/"), "http://[::1]:8080");
    }

    /// The published vectors (docs/scale-out.md): change them and every user's shards move.
    #[test]
    fn fnv1a64_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// The published shard vectors (docs/scale-out.md): host key -> FNV-1a 64 -> shard of 4.
    #[test]
    fn shard_assignment_vectors() {
        let cases = [
            ("http://example.com:80", 0x3e7e_f9ea_584e_ea22, 2),
            ("https://example.com:443", 0xd18c_9094_2847_0578, 0),
            ("http://127.0.0.1:8080", 0x7532_7da3_b04b_cbf2, 2),
            ("https://api.example.org:443", 0x7c92_429c_125c_8c11, 1),
        ];
        for (key, hash, shard) in cases {
            assert_eq!(fnv1a64(key.as_bytes()), hash, "{key}");
            assert_eq!(Shard::new(0, 4).unwrap().of_host(key), shard, "{key}");
        }
    }

    #[test]
    fn every_host_has_exactly_one_owner() {
        for n in 1..=7 {
            for host in ["http://a.test:80", "https://b.test:443", "http://[::1]:9"] {
                let owners = (0..n)
                    .filter(|&k| Shard::new(k, n).unwrap().owns(Some(host)))
                    .count();
                assert_eq!(owners, 1, "{host} of {n}");
            }
            let owners = (0..n)
                .filter(|&k| Shard::new(k, n).unwrap().owns(None))
                .count();
            assert_eq!(owners, 1);
        }
    }

    #[test]
    fn parses_k_of_n_and_refuses_the_rest() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard::new(2, 4).unwrap());
        assert_eq!(" 0/1 ".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in ["4/4", "0/0", "1", "-1/4", "a/4", "1/b", "5/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
