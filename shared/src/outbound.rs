//! The outbound guard: every request the platform makes on a team's behalf
//! (HTTP tools, and webhooks later) goes through it. It resolves the host
//! itself and refuses loopback, private, link-local (cloud metadata),
//! CGNAT, unspecified, multicast, broadcast and reserved addresses and their
//! IPv6 forms; the connection goes to the address that was checked (no second
//! lookup, so DNS rebinding cannot swap it); no redirect is followed and
//! proxy variables are ignored; responses are read up to a cap. Operators
//! may allow internal ranges and host names explicitly.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Read at most this much of a response unless a tool says otherwise.
pub const DEFAULT_RESPONSE_CAP: usize = 1024 * 1024;
/// No tool may raise its cap above this.
pub const MAX_RESPONSE_CAP: usize = 8 * 1024 * 1024;

/// What the operator lets through although the guard would refuse it
/// (`AGENTRUN_OUTBOUND_ALLOW`: comma-separated CIDRs, addresses and host names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundAllow {
    networks: Vec<IpNet>,
    hosts: Vec<String>,
}

impl OutboundAllow {
    /// Nothing internal is allowed.
    pub fn none() -> Self {
        Self::default()
    }

    /// `127.0.0.0/8, ::1, tools.internal`: CIDRs, single addresses, host names.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut allow = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(network) = entry.parse::<IpNet>() {
                allow.networks.push(network);
            } else if let Ok(address) = entry.parse::<IpAddr>() {
                allow.networks.push(IpNet::from(address));
            } else if entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && !entry.contains('/')
            {
                allow.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is neither a CIDR, an address nor a host name"
                ));
            }
        }
        Ok(allow)
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    fn allows_address(&self, address: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }
}

/// Why a destination is refused; the text never says whether anything listens there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("outbound_blocked: {0}")]
    Blocked(String),
    #[error("the URL is not a valid http(s) URL")]
    InvalidUrl,
}

/// The class of address the guard refuses, or `None` for a public one.
pub fn refused_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = a.octets();
    Some(match () {
        () if a.is_loopback() => "loopback",
        () if a.is_private() => "private",
        () if a.is_link_local() => "link-local",
        () if first == 100 && (64..128).contains(&second) => "shared address space (CGNAT)",
        () if first == 0 => "this network",
        () if a.is_broadcast() => "broadcast",
        () if a.is_multicast() => "multicast",
        () if first >= 240 => "reserved",
        // 192.0.0.0/24: protocol assignments; 198.18.0.0/15: benchmarking.
        () if first == 192 && second == 0 && a.octets()[2] == 0 => "reserved",
        () if first == 198 && (second == 18 || second == 19) => "reserved",
        () => return None,
    })
}

fn refused_v6(a: Ipv6Addr) -> Option<&'static str> {
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address.
    if let Some(v4) = a.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let segments = a.segments();
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !a.is_loopback() && !a.is_unspecified() {
        return refused_v4(Ipv4Addr::from(a.to_bits() as u32));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return refused_v4(Ipv4Addr::from(a.to_bits() as u32));
    }
    if segments[0] == 0x2002 {
        let embedded = ((segments[1] as u32) << 16) | segments[2] as u32;
        return refused_v4(Ipv4Addr::from(embedded));
    }
    Some(match () {
        () if a.is_loopback() => "loopback",
        () if a.is_unspecified() => "this network",
        () if (segments[0] & 0xfe00) == 0xfc00 => "private (unique local)",
        () if (segments[0] & 0xffc0) == 0xfe80 => "link-local",
        () if (segments[0] & 0xffc0) == 0xfec0 => "site-local",
        () if a.is_multicast() => "multicast",
        () if segments[0] == 0x2001 && segments[1] == 0xdb8 => "documentation",
        () => return None,
    })
}

/// Resolves through the system and keeps only addresses the guard allows;
/// reqwest connects to exactly these.
struct GuardedResolver {
    allow: Arc<OutboundAllow>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| {
                    Box::new(OutboundError::Blocked(format!("{host} does not resolve")))
                        as Box<dyn StdError + Send + Sync>
                })?
                .collect();
            let allowed_by_name = allow.allows_host(&host);
            let mut refused = None;
            let mut usable = Vec::new();
            for address in addresses {
                match refused_class(address.ip()) {
                    Some(class) if !allowed_by_name && !allow.allows_address(address.ip()) => {
                        refused.get_or_insert(class);
                    }
                    _ => usable.push(address),
                }
            }
            // One refused address refuses the name: a resolver that answers
            // both a public and an internal address must not pick for us.
            if let Some(class) = refused {
                return Err(Box::new(OutboundError::Blocked(format!(
                    "{host} resolves to a {class} address"
                ))) as Box<dyn StdError + Send + Sync>);
            }
            if usable.is_empty() {
                return Err(
                    Box::new(OutboundError::Blocked(format!("{host} has no address")))
                        as Box<dyn StdError + Send + Sync>,
                );
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client for requests made on a team's behalf.
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    allow: Arc<OutboundAllow>,
}

/// A response body read up to a cap; NUL and invalid UTF-8 are replaced so
/// it can be stored as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CappedBody {
    pub text: String,
    pub truncated: bool,
}

/// The outcome of one guarded request.
#[derive(Debug)]
pub enum OutboundResponse {
    Answered {
        status: reqwest::StatusCode,
        body: CappedBody,
    },
    /// The guard refused the destination (or a redirect): nothing was sent there.
    Blocked(String),
    /// Connecting, sending or reading failed; the text names no address or port.
    Failed(String),
}

impl OutboundClient {
    pub fn new(allow: OutboundAllow) -> Self {
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
            }))
            .build()
            .unwrap_or_default();
        Self { http, allow }
    }

    /// Checks a URL whose host is an address literal (the resolver never sees
    /// those); names are checked when they resolve.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, OutboundError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| OutboundError::InvalidUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OutboundError::InvalidUrl);
        }
        let address = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(parsed),
            None => return Err(OutboundError::InvalidUrl),
        };
        match refused_class(address) {
            Some(class) if !self.allow.allows_address(address) => Err(OutboundError::Blocked(
                format!("{address} is a {class} address"),
            )),
            _ => Ok(parsed),
        }
    }

    /// POSTs `body` with `headers`, reading at most `cap` bytes of the answer.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
        cap: usize,
    ) -> OutboundResponse {
        let url = match self.check_url(url) {
            Ok(url) => url,
            Err(error) => return OutboundResponse::Blocked(error.to_string()),
        };
        let mut request = self.http.post(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                if let Some(blocked) = blocked_cause(&error) {
                    return OutboundResponse::Blocked(blocked.to_string());
                }
                return OutboundResponse::Failed(describe(&error));
            }
        };
        let status = response.status();
        if status.is_redirection() {
            return OutboundResponse::Blocked(format!(
                "outbound_blocked: the endpoint answered {status} (a redirect); redirects are not followed"
            ));
        }
        let mut bytes = Vec::new();
        let mut truncated = false;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap.saturating_sub(bytes.len());
                    if chunk.len() > room {
                        bytes.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => return OutboundResponse::Failed(describe(&error)),
            }
        }
        OutboundResponse::Answered {
            status,
            body: CappedBody {
                text: storable_text(&bytes),
                truncated,
            },
        }
    }
}

/// Text PostgreSQL can store: invalid UTF-8 and NUL become U+FFFD.
pub fn storable_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}")
}

fn blocked_cause(error: &reqwest::Error) -> Option<&OutboundError> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<OutboundError>() {
            return Some(blocked);
        }
        source = cause.source();
    }
    None
}

/// What went wrong, without the URL (it may carry credentials) or the
/// transport's text (it would tell which ports are open).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the request timed out".to_owned()
    } else if error.is_connect() {
        "could not connect to the endpoint".to_owned()
    } else if error.is_body() || error.is_decode() {
        "reading the response failed".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

/// `scheme://host[:port]/path` without userinfo, query or fragment, for logs.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_class_is_refused_and_public_addresses_pass() {
        for (address, class) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("169.254.170.2", "link-local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("0.0.0.0", "this network"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "this network"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(refused_class(ip), Some(class), "{address}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "100.128.0.1",
        ] {
            assert_eq!(refused_class(public.parse().unwrap()), None, "{public}");
        }
    }

    #[test]
    fn address_literals_in_any_spelling_are_checked() {
        let client = OutboundClient::new(OutboundAllow::none());
        for url in [
            "http://127.0.0.1:5432/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0/",
        ] {
            assert!(
                matches!(client.check_url(url), Err(OutboundError::Blocked(_))),
                "{url}"
            );
        }
        assert!(client.check_url("https://example.com/hook").is_ok());
        assert_eq!(
            client.check_url("ftp://example.com/"),
            Err(OutboundError::InvalidUrl)
        );
    }

    #[test]
    fn the_allowlist_takes_networks_addresses_and_names() {
        let allow = OutboundAllow::parse("127.0.0.0/8, ::1,tools.internal").unwrap();
        assert!(allow.allows_address("127.0.0.2".parse().unwrap()));
        assert!(allow.allows_address("::1".parse().unwrap()));
        assert!(!allow.allows_address("10.0.0.1".parse().unwrap()));
        assert!(allow.allows_host("Tools.Internal."));
        assert!(OutboundAllow::parse("10.0.0.0/33").is_err());
        assert!(OutboundAllow::parse("").unwrap() == OutboundAllow::none());
        let client = OutboundClient::new(allow);
        assert!(client.check_url("http://127.0.0.1:9/").is_ok());
    }

    #[test]
    fn stored_text_has_no_nul_and_is_utf8() {
        assert_eq!(storable_text(b"a\0b\xffc"), "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn logged_urls_lose_credentials_and_queries() {
        assert_eq!(
            redacted_url("https://user:pw@example.com/hook?token=abc#x"),
            "https://example.com/hook"
        );
    }
}
