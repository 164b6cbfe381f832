//! A minimal HTTP/1.1 GET, enough to read a daemon's JSON status page
//! (`/api/v1/status`) without pulling an HTTP client into the workspace.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GETs `url` (`http://host:port/path`) and returns the body of a 200
/// answer. Handles `Content-Length` and chunked bodies; the connection is
/// closed after the answer.
pub async fn get(url: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    tokio::time::timeout(timeout, get_inner(url))
        .await
        .with_context(|| format!("GET {url} took longer than {timeout:?}"))?
}

async fn get_inner(url: &str) -> anyhow::Result<Vec<u8>> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?} is not an http:// URL"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host_port)
        .await
        .with_context(|| format!("cannot connect to {host_port}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200") {
        bail!("GET {url} answered {status_line:?}");
    }
    if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        Ok(body.to_vec())
    }
}

/// Joins the chunks of a chunked body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line has no end")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("chunk size {size_text:?} is not hexadecimal"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).context("a chunk is cut short")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).context("a chunk has no end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_chunks() {
        let body = b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).expect("valid"), b"hello world");
        assert!(dechunk(b"5\r\nhel").is_err());
    }
}
