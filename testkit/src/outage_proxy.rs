//! A TCP proxy on loopback that a test can cut and restore: a network outage between one
//! client and the shared broker (or database), without touching the shared server.
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections from a local port to `upstream` while up. [`OutageProxy::cut`] closes
/// every forwarded connection and refuses new ones (accepted, then closed at once) until
/// [`OutageProxy::restore`]. Stops when dropped.
pub struct OutageProxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl OutageProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = state.subscribe();
                if !*rx.borrow() {
                    drop(client); // down: the connection is refused after accept
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|up| !*up) => {} // cut: both sockets close on drop
                    }
                });
            }
        });
        Self { addr, up, task }
    }

    /// Starts a proxy for the host and port of `url` (`amqp://u:p@host:port/vhost`) and
    /// returns it with the same URL rewritten to go through it.
    pub async fn for_url(url: &str) -> (Self, String) {
        let mut parsed = reqwest::Url::parse(url).expect("a URL");
        let host = parsed.host_str().expect("a host").to_string();
        let port = parsed.port_or_known_default().unwrap_or(5672);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("the host resolves")
            .next()
            .expect("an address");
        let proxy = Self::start(upstream).await;
        parsed
            .set_host(Some("127.0.0.1"))
            .expect("a host can be set");
        parsed
            .set_port(Some(proxy.addr.port()))
            .expect("a port can be set");
        (proxy, parsed.to_string())
    }

    /// The local address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echoes(stream: &mut TcpStream) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.is_ok() && &buf == b"ping"
    }

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_restored() {
        let proxy = OutageProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut open).await);
        proxy.cut();
        assert!(!echoes(&mut open).await, "the open connection is closed");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            !echoes(&mut refused).await,
            "a new connection is closed at once"
        );
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut again).await);
    }
}
