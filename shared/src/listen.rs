//! Listening sockets for the HTTP servers (the API and the mock LLM).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may queue before they are accepted (it caps this
/// at `net.core.somaxconn`). The default of 1,024 drops connections when
/// thousands of clients open theirs at once.
const BACKLOG: u32 = 16_384;

/// A listener on `addr` with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
