//! Listening sockets: the shared port on every core (SO_REUSEPORT, the kernel
//! spreads connections by 4-tuple hash) and, with `--core-ports`, each core's
//! own port.

use crate::config::Config;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

/// A core's listening sockets.
pub struct CoreListeners {
    pub sockets: Vec<Socket>,
}

fn listen(addr: SocketAddr, backlog: i32, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Accepted sockets inherit TCP_NODELAY: replies leave without Nagle delay.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// Binds every core's sockets, or reports the first address that fails.
pub fn bind_all(config: &Config) -> Result<Vec<CoreListeners>, String> {
    let mut cores = Vec::new();
    for core in 0..config.cores() {
        let mut sockets = Vec::new();
        for ip in &config.listen {
            let shared = SocketAddr::new(*ip, config.port);
            sockets.push(
                listen(shared, config.backlog, true)
                    .map_err(|e| format!("failed to listen on {shared}: {e}"))?,
            );
            if let Some(base) = config.core_ports {
                let own = SocketAddr::new(*ip, base + core as u16);
                sockets.push(
                    listen(own, config.backlog, false)
                        .map_err(|e| format!("failed to listen on {own}: {e}"))?,
                );
            }
        }
        cores.push(CoreListeners { sockets });
    }
    Ok(cores)
}
