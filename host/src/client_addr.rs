//! Client addresses behind load balancers. A TCP proxy can put a PROXY
//! protocol header (v1 text or v2 binary) before the connection's own bytes;
//! an HTTP proxy adds `Forwarded` or `X-Forwarded-For` to the request. Either
//! names the real client, and either is believed only where the config says
//! so: the header on listeners with `proxy-protocol = true`, the HTTP headers
//! only from peers in `trusted-proxies`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The longest PROXY header accepted: a v1 line is at most 107 bytes, and a
/// v2 header carries only addresses and a few TLVs in practice.
const MAX_HEADER: usize = 4096;

/// A stream that first yields bytes read past a PROXY header, then the rest.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Reads the PROXY header at the start of `stream` and returns the client it
/// names (the socket's own `peer` for a LOCAL or UNKNOWN header, which load
/// balancers send for their health checks), and the stream positioned after
/// the header. A connection without a valid header is an error: on a
/// listener behind a proxy, a client that can reach berth directly must not
/// be able to pass as anyone.
pub(crate) async fn read_proxy_header<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
) -> io::Result<(Prefixed<S>, SocketAddr)> {
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before its PROXY header ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() > MAX_HEADER {
                return Err(invalid("PROXY header too long"));
            }
            continue;
        }
        let (len, client) = match parsed {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_client(&header, peer)),
            HeaderResult::V2(Ok(header)) => (header.len(), v2_client(&header, peer)),
            HeaderResult::V1(Err(error)) => {
                return Err(invalid(format!("bad PROXY header: {error}")));
            }
            HeaderResult::V2(Err(error)) => {
                return Err(invalid(format!("bad PROXY header: {error}")));
            }
        };
        let rest = Bytes::copy_from_slice(&buf[len..]);
        return Ok((
            Prefixed {
                prefix: rest,
                inner: stream,
            },
            client,
        ));
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn v1_client(header: &v1::Header, peer: SocketAddr) -> SocketAddr {
    match header.addresses {
        v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        v1::Addresses::Unknown => peer,
    }
}

fn v2_client(header: &v2::Header, peer: SocketAddr) -> SocketAddr {
    if header.command == v2::Command::Local {
        return peer;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => peer,
    }
}

/// The client a request comes from: `peer`, unless `peer` is a trusted proxy
/// whose `Forwarded` (preferred) or `X-Forwarded-For` header names someone.
/// Proxies append, so the list is read from the right, skipping trusted
/// proxies; the first address that is not one is the client (anything left of
/// it could have been written by the client itself). A forwarded address has
/// no port, so the result carries port 0 unless `Forwarded` gives one.
pub(crate) fn from_forwarded(
    headers: &HeaderMap,
    peer: SocketAddr,
    trusted: &[IpNet],
) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let hops: Vec<Option<SocketAddr>> = if headers.contains_key(http::header::FORWARDED) {
        headers
            .get_all(http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(forwarded_for)
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|hop| hop.trim().parse::<IpAddr>().ok().map(|ip| (ip, 0).into()))
            .collect()
    };
    for hop in hops.into_iter().rev() {
        match hop {
            Some(addr) if is_trusted(addr.ip()) => continue,
            Some(addr) => return addr,
            // An obfuscated or garbled hop: who is behind it is unknown, so
            // the last proxy that spoke for itself is the best we know.
            None => return peer,
        }
    }
    peer
}

/// The `for=` address of one `Forwarded` element (RFC 7239), if it is one.
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })?;
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    ip.parse::<IpAddr>().ok().map(|ip| (ip, 0).into())
}

/// A header map of `pairs`, for tests of code that reads headers.
#[cfg(test)]
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(from_forwarded(&spoofed, peer, &[]), peer);
        assert_eq!(
            from_forwarded(&spoofed, peer, &nets(&["192.168.0.0/16"])),
            peer
        );
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            from_forwarded(&spoofed, peer, &trusted),
            "1.2.3.4:0".parse().unwrap()
        );
        // The client wrote the leftmost entry itself; the rightmost untrusted hop wins.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.9")]);
        assert_eq!(
            from_forwarded(&chain, peer, &trusted),
            "1.2.3.4:0".parse().unwrap()
        );
        let forwarded = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::17]:4711\";proto=https",
        )]);
        assert_eq!(
            from_forwarded(&forwarded, peer, &trusted),
            "[2001:db8::17]:4711".parse().unwrap()
        );
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(from_forwarded(&hidden, peer, &trusted), peer);
    }

    #[tokio::test]
    async fn proxy_headers_v1_and_v2_name_the_client_and_keep_what_follows() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n".to_vec();
        let (mut rest, client) = read_proxy_header(&v1[..], peer).await.unwrap();
        assert_eq!(client, "203.0.113.7:51000".parse().unwrap());
        let mut after = String::new();
        rest.read_to_string(&mut after).await.unwrap();
        assert_eq!(after, "GET / HTTP/1.1\r\n");

        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend([0x21, 0x11, 0, 12]);
        v2.extend([198, 51, 100, 9, 10, 0, 0, 1]);
        v2.extend(51001u16.to_be_bytes());
        v2.extend(443u16.to_be_bytes());
        v2.extend(b"hello");
        let (mut rest, client) = read_proxy_header(&v2[..], peer).await.unwrap();
        assert_eq!(client, "198.51.100.9:51001".parse().unwrap());
        let mut after = String::new();
        rest.read_to_string(&mut after).await.unwrap();
        assert_eq!(after, "hello");

        let local = [b"\r\n\r\n\0\r\nQUIT\n".as_slice(), &[0x20, 0x00, 0, 0]].concat();
        assert_eq!(read_proxy_header(&local[..], peer).await.unwrap().1, peer);
        assert!(
            read_proxy_header(&b"GET / HTTP/1.1\r\n\r\n"[..], peer)
                .await
                .is_err()
        );
    }
}
