//! A TCP proxy on loopback that a test can cut, restore and hold: a network outage (or a
//! server that stops answering) between one client and the shared broker (or database),
//! without touching the shared server. [`OutageProxy::start_on`] listens on another local
//! address instead: the real node's bridge, so pods reach the loopback-only shared servers.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections from a local port to `upstream` while up. [`OutageProxy::cut`] closes
/// every forwarded connection and refuses new ones (accepted, then closed at once) until
/// [`OutageProxy::restore`]. [`OutageProxy::hold_replies`] keeps the connections open but
/// stops passing the server's bytes to the client (the client's still reach the server) until
/// [`OutageProxy::release_replies`]: a broker whose confirms are late, made deterministic.
/// Stops when dropped.
pub struct OutageProxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<Link>>,
    held: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

/// The proxy's state: whether it forwards, and how many cuts happened. A connection closes
/// when the count moves past the one it was opened under, so a cut followed at once by a
/// restore still closes every connection that was open (a plain up/down flag could be seen
/// only after the restore, and the cut would be missed).
#[derive(Clone, Copy, Debug)]
struct Link {
    up: bool,
    cuts: u64,
}

/// Copies `from` to `to`; before each write waits while `held` says so (what was read is
/// kept, nothing is dropped). Ends at EOF or on the first I/O error.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut held: Option<watch::Receiver<bool>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(held) = held.as_mut()
            && held.wait_for(|h| !*h).await.is_err()
        {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl OutageProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_on(Ipv4Addr::LOCALHOST.into(), upstream).await
    }

    /// Starts forwarding `listen`:<free port> to `upstream`; `listen` must be an address of
    /// this machine (loopback, or the real node's bridge for pods to connect to).
    pub async fn start_on(listen: IpAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind((listen, 0))
            .await
            .unwrap_or_else(|e| panic!("bind a port on {listen}: {e}"));
        let addr = listener.local_addr().expect("a bound address");
        let up = Arc::new(watch::Sender::new(Link { up: true, cuts: 0 }));
        let held = Arc::new(watch::Sender::new(false));
        let state = up.clone();
        let hold = held.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = state.subscribe();
                let opened = *rx.borrow();
                if !opened.up {
                    drop(client); // down: the connection is refused after accept
                    continue;
                }
                let replies_held = hold.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let upward = pump(client_read, server_write, None);
                    let downward = pump(server_read, client_write, Some(replies_held));
                    tokio::select! {
                        // A cut wins over bytes ready to pass: nothing held is sent after it.
                        biased;
                        _ = rx.wait_for(|l| l.cuts != opened.cuts) => {} // cut: both sockets close on drop
                        _ = async { tokio::join!(upward, downward) } => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            held,
            task,
        }
    }

    /// Starts a proxy for the host and port of `url` (`amqp://u:p@host:port/vhost`) and
    /// returns it with the same URL rewritten to go through it.
    pub async fn for_url(url: &str) -> (Self, String) {
        Self::for_url_on(Ipv4Addr::LOCALHOST.into(), url).await
    }

    /// [`OutageProxy::for_url`] listening on `listen` (see [`OutageProxy::start_on`]); the
    /// URL returned names `listen`.
    pub async fn for_url_on(listen: IpAddr, url: &str) -> (Self, String) {
        let mut parsed = reqwest::Url::parse(url).expect("a URL");
        let host = parsed.host_str().expect("a host").to_string();
        let port = parsed.port_or_known_default().unwrap_or(5672);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("the host resolves")
            .next()
            .expect("an address");
        let proxy = Self::start_on(listen, upstream).await;
        parsed
            .set_host(Some(&listen.to_string()))
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
        self.up.send_modify(|l| {
            l.up = false;
            l.cuts += 1;
        });
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.send_modify(|l| l.up = true);
    }

    /// Stops passing the server's bytes to the clients (connections stay open; the clients'
    /// bytes still reach the server) until [`OutageProxy::release_replies`].
    pub fn hold_replies(&self) {
        self.held.send_replace(true);
    }

    /// Passes the server's bytes again, the held ones first.
    pub fn release_replies(&self) {
        self.held.send_replace(false);
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

    #[tokio::test]
    async fn a_cut_restored_at_once_still_closes_the_connections_that_were_open() {
        let proxy = OutageProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut open).await);
        proxy.hold_replies();
        open.write_all(b"ping").await.unwrap();
        proxy.cut();
        proxy.release_replies();
        proxy.restore();
        let mut buf = [0u8; 4];
        assert!(
            !matches!(open.read(&mut buf).await, Ok(n) if n > 0),
            "the held reply passed after the cut"
        );
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut again).await);
    }

    #[tokio::test]
    async fn held_replies_reach_the_client_only_once_released_and_nothing_is_lost() {
        let proxy = OutageProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut open).await);
        proxy.hold_replies();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        // Nothing comes back while held: a read with a short bound sees no byte. (The bound
        // only limits how long the test looks; the hold itself waits forever.)
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(300), open.read(&mut buf)).await;
        assert!(early.is_err(), "a reply passed the hold: {early:?}");
        proxy.release_replies();
        open.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            &buf, b"ping",
            "the held reply arrives whole after the release"
        );
        assert!(echoes(&mut open).await);
    }
}
