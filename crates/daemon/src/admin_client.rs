//! The client side of the admin endpoint, for `pbx-listener status` and `tail`: one HTTP/1.1
//! GET over a loopback TCP connection (hyper's connection-level client: no pool, no TLS, no
//! proxy; the admin endpoint is plain HTTP on 127.0.0.1 by default).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;

/// The admin address when neither `--admin` nor the configuration says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9187";

/// The largest `/status` body read.
const MAX_STATUS_BODY: usize = 1 << 20;

/// Where the admin endpoint is: `--admin`, else `[admin] listen` of the configuration file,
/// else the default. Only that key is read (leniently): `status` must work when the rest of
/// the configuration is broken, or its secrets unreadable to this user. An unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback.
pub fn admin_addr(flag: Option<SocketAddr>, config: &Path) -> anyhow::Result<SocketAddr> {
    let addr = match flag {
        Some(a) => a,
        None => match std::fs::read_to_string(config) {
            Ok(text) => from_config(&text).with_context(|| format!("reading `[admin]` of {}", config.display()))?,
            Err(_) => DEFAULT_ADMIN.parse().context("the default admin address")?,
        },
    };
    Ok(match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        a => a,
    })
}

fn from_config(text: &str) -> anyhow::Result<SocketAddr> {
    let table: toml::Table = toml::from_str(text).context("not valid TOML")?;
    let admin = table.get("admin").and_then(|v| v.as_table());
    if admin.and_then(|a| a.get("enabled")).and_then(|v| v.as_bool()) == Some(false) {
        bail!("the admin endpoint is disabled (`[admin] enabled = false`); pass --admin if it runs elsewhere");
    }
    let listen = admin.and_then(|a| a.get("listen")).and_then(|v| v.as_str()).unwrap_or(DEFAULT_ADMIN);
    listen.parse().with_context(|| format!("`[admin] listen = {listen:?}` is not an address"))
}

/// `GET path` (with its query string) on `addr`; the response with its body still to read.
/// Connecting and the response head are bounded by `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Response<Incoming>> {
    let head = async {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("talking HTTP to {addr}"))?;
        tokio::spawn(async move {
            // Ends with the response body (or an error the body read reports).
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, concat!("pbx-listener/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .context("building the request")?;
        sender.send_request(request).await.with_context(|| format!("GET {path} from {addr}"))
    };
    tokio::time::timeout(timeout, head).await.with_context(|| format!("no answer from {addr} within {timeout:?}"))?
}

/// `GET path` and its whole body (at most 1 MiB), which must come with 200.
pub async fn get_text(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let response = get(addr, path, timeout).await?;
    let status = response.status();
    let body = tokio::time::timeout(timeout, Limited::new(response.into_body(), MAX_STATUS_BODY).collect())
        .await
        .with_context(|| format!("the body of {path} did not arrive within {timeout:?}"))?
        .map_err(|e| anyhow::anyhow!("reading the body of {path}: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != StatusCode::OK {
        bail!("GET {path} answered {status}: {}", text.trim());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_admin_listen_and_unspecified_means_loopback() {
        assert_eq!(from_config("[admin]\nlisten = \"127.0.0.1:9999\"\n").unwrap().port(), 9999);
        assert_eq!(from_config("[account]\nid = 1\n").unwrap().to_string(), DEFAULT_ADMIN);
        let err = from_config("[admin]\nenabled = false\n").unwrap_err().to_string();
        assert!(err.contains("disabled"), "{err}");
        assert!(from_config("[admin]\nlisten = \"nope\"\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[admin]\nlisten = \"0.0.0.0:9187\"\n").unwrap();
        assert_eq!(admin_addr(None, &path).unwrap().to_string(), "127.0.0.1:9187");
        let flag = "127.0.0.2:1".parse().unwrap();
        assert_eq!(admin_addr(Some(flag), &path).unwrap(), flag);
        assert_eq!(admin_addr(None, &dir.path().join("missing")).unwrap().to_string(), DEFAULT_ADMIN);
    }
}
