//! A minimal HTTP/1.1 exchange over any byte stream: write one request, read one
//! response (`Content-Length`, `chunked`, or until the server closes).
//!
//! Hand-written on std so that the CNI plugin, which links this client and runs once per
//! container start, pays for no async runtime and no HTTP stack.
//!
//! Two modes: [`write_request`] + [`read_response`] for one exchange per connection
//! (`Connection: close`); [`encode_request`] (`close: false`) + [`read_response_on`] for a
//! kept-alive connection, where the response is read exactly by its framing (never to
//! EOF) and the caller learns whether the connection may carry another request.

use std::io::{self, BufRead, BufReader, Read, Write};

/// Largest response head (status line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes a request with `Connection: close`. `path` must already be percent-encoded.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    let bytes = encode_request(method, host, path, headers, body, true)?;
    w.write_all(&bytes)?;
    w.flush()
}

/// A request as bytes (head and body in one buffer, so it goes out in one write).
/// `close`: send `Connection: close`; without it the connection stays open (HTTP/1.1's
/// default). `path` must already be percent-encoded.
pub fn encode_request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> io::Result<Vec<u8>> {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(128 + path.len());
    let _ = write!(head, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if close {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "header with a line break",
            ));
        }
        let _ = write!(head, "{k}: {v}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(head, "Content-Length: {}\r\n", b.len());
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    Ok(out)
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response ended",
        ));
    }
    if n > *budget {
        return Err(bad("response head too large"));
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a line",
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| bad("response head is not UTF-8"))
}

/// Reads one response. `head_request`: the request was HEAD (no body follows).
pub fn read_response(r: impl Read, head_request: bool) -> io::Result<Response> {
    let mut r = BufReader::new(r);
    read_response_on(&mut r, head_request).map(|(resp, _)| resp)
}

/// Reads one response from a connection that may be kept: the body is read by its
/// `Content-Length` or chunked framing, never further. Also returns whether the
/// connection may carry another request: HTTP/1.1, no `Connection: close`, and a body
/// that was delimited (a body that runs until the server closes ends the connection).
pub fn read_response_on(r: &mut impl BufRead, head_request: bool) -> io::Result<(Response, bool)> {
    let mut budget = MAX_HEAD;
    let (status, headers, http11) = loop {
        let line = read_line(r, &mut budget)?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("not an HTTP/1.x status line: {line:?}")));
        }
        let http11 = version == "HTTP/1.1";
        let status: u16 = parts
            .next()
            .and_then(|s| (s.len() == 3).then_some(s))
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..1000).contains(s))
            .ok_or_else(|| bad(format!("bad status line: {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r, &mut budget)?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line: {line:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        // 1xx answers are interim: the real one follows.
        if (100..200).contains(&status) {
            continue;
        }
        break (status, headers, http11);
    };
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let close = resp.headers.iter().any(|(n, v)| {
        n == "connection" && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    });
    let mut reusable = http11 && !close;
    if head_request || status == 204 || status == 304 {
        return Ok((resp, reusable));
    }
    let chunked = resp.header("transfer-encoding").is_some_and(|te| {
        te.to_ascii_lowercase()
            .split(',')
            .any(|t| t.trim() == "chunked")
    });
    if chunked {
        resp.body = read_chunked(r)?;
    } else if let Some(cl) = resp.header("content-length") {
        let len: usize = cl
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {cl:?}")))?;
        if len > MAX_BODY {
            return Err(bad(format!("response body of {len} bytes is too large")));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else {
        // No framing: the body ends when the server closes, so the connection ends too.
        reusable = false;
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut resp.body)?;
        if resp.body.len() > MAX_BODY {
            return Err(bad("response body too large"));
        }
    }
    Ok((resp, reusable))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)?;
        let size_str = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| bad(format!("bad chunk size {size_str:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            let mut budget = MAX_HEAD;
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("response body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

/// Percent-encodes one path segment (everything but unreserved characters), so a handle
/// like `net/abc/eth0` travels as one segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value (as [`encode_segment`]).
pub fn encode_query(s: &str) -> String {
    encode_segment(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> io::Result<Response> {
        read_response(raw.as_bytes(), false)
    }

    #[test]
    fn content_length_body() {
        let r = parse(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let r = parse(
            "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "Wikipedia in\r\n\r\nchunks."
        );
    }

    #[test]
    fn body_until_close_and_no_body_statuses() {
        let r = parse("HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
        assert_eq!(r.body, b"hello");
        let r = parse("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        let r = read_response(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".as_bytes(),
            true,
        )
        .unwrap();
        assert!(r.body.is_empty());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 404);
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let r = parse("HTTP/1.1 200 OK\nContent-Length: 1\n\nx").unwrap();
        assert_eq!(r.body, b"x");
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        for raw in [
            "",
            "garbage\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: \u{ff}",
        ] {
            assert!(parse(raw).is_err(), "{raw:?} parsed");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn writes_a_request() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "POST",
            "kipamd",
            "/v1/x",
            &[("Authorization", "Bearer t")],
            Some(b"{}"),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/x HTTP/1.1\r\nHost: kipamd\r\nConnection: close\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}"
        );
        let mut out = Vec::new();
        assert!(
            write_request(
                &mut out,
                "GET",
                "h",
                "/",
                &[("X", "a\r\nInjected: 1")],
                None
            )
            .is_err()
        );
    }

    #[test]
    fn kept_connections_read_exactly_one_response() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\ny";
        let mut r = BufReader::new(raw.as_bytes());
        let (a, keep) = read_response_on(&mut r, false).unwrap();
        assert_eq!((a.body.as_slice(), keep), (&b"{}"[..], true));
        let (b, keep) = read_response_on(&mut r, false).unwrap();
        assert_eq!((b.body.as_slice(), keep), (&b"x"[..], true));
        let (c, keep) = read_response_on(&mut r, false).unwrap();
        assert_eq!((c.status, keep), (204, true));
        let (d, keep) = read_response_on(&mut r, false).unwrap();
        assert_eq!((d.body.as_slice(), keep), (&b"y"[..], false));
        // Unframed bodies and HTTP/1.0 end the connection.
        let mut r = BufReader::new("HTTP/1.1 200 OK\r\n\r\nrest".as_bytes());
        let (e, keep) = read_response_on(&mut r, false).unwrap();
        assert_eq!((e.body.as_slice(), keep), (&b"rest"[..], false));
        let mut r = BufReader::new("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n".as_bytes());
        assert!(!read_response_on(&mut r, false).unwrap().1);
    }

    #[test]
    fn encodes_kept_alive_requests_without_connection_close() {
        let out = encode_request("DELETE", "kipamd", "/v1/x", &[], None, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DELETE /v1/x HTTP/1.1\r\nHost: kipamd\r\n\r\n"
        );
    }

    #[test]
    fn encodes_segments() {
        assert_eq!(encode_segment("net/abc/eth0"), "net%2Fabc%2Feth0");
        assert_eq!(encode_segment("a b%c"), "a%20b%25c");
        assert_eq!(encode_segment("10.0.0.0/24"), "10.0.0.0%2F24");
        assert_eq!(encode_segment("ok-._~"), "ok-._~");
    }
}
