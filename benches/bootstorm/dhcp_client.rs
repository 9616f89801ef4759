//! DHCP: one socket on port 68 for every simulated machine, replies handed out by xid.

use super::*;

pub(crate) struct DhcpMux {
    pub(crate) socket: UdpSocket,
    pub(crate) pending: Mutex<HashMap<u32, mpsc::UnboundedSender<Message>>>,
    /// Replies whose xid nobody waits for (late answers to a request already answered).
    pub(crate) strays: AtomicU64,
}

/// Removes a pending xid when the transaction ends, however it ends.
pub(crate) struct PendingGuard<'a>(&'a DhcpMux, u32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl DhcpMux {
    /// Binds `0.0.0.0:68` on [`CLIENT_IF`] and starts the receive loop.
    pub(crate) fn bind() -> std::io::Result<Arc<DhcpMux>> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        // Without an outgoing interface Linux has no route for 255.255.255.255 here.
        s.bind_device(Some(CLIENT_IF.as_bytes()))?;
        // 200 broadcast OFFERs can arrive in one burst: do not let our side drop them.
        if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))
            .is_err()
        {
            let _ = s.set_recv_buffer_size(8 << 20);
        }
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
        s.set_nonblocking(true)?;
        let mux = Arc::new(DhcpMux {
            socket: UdpSocket::from_std(s.into())?,
            pending: Mutex::new(HashMap::new()),
            strays: AtomicU64::new(0),
        });
        let rx = mux.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, _)) = rx.socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(msg) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                if msg.opcode() != Opcode::BootReply {
                    continue;
                }
                let tx = rx
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&msg.xid())
                    .cloned();
                match tx {
                    Some(tx) => {
                        let _ = tx.send(msg);
                    }
                    None => {
                        rx.strays.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(mux)
    }

    /// Sends `req` to `dest` and waits for a reply of type `want` for the same MAC, resending
    /// every [`DHCP_RETRY_AFTER`] up to [`DHCP_RESENDS`] times. Returns the reply and the
    /// number of resends.
    pub(crate) async fn transact(
        &self,
        req: &PxeRequest,
        dest: SocketAddr,
        want: MessageType,
    ) -> Result<(Message, u32), String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.xid, tx);
        let _guard = PendingGuard(self, req.xid);
        let bytes = req.encode();
        for attempt in 0..=DHCP_RESENDS {
            self.socket
                .send_to(&bytes, dest)
                .await
                .map_err(|e| format!("sending DHCP to {dest}: {e}"))?;
            let deadline = tokio::time::Instant::now() + DHCP_RETRY_AFTER;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) if m.opts().msg_type() == Some(want) && m.chaddr() == req.mac => {
                        return Ok((m, attempt));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
        Err(format!(
            "no DHCP {want:?} from {dest} after {} attempts",
            DHCP_RESENDS + 1
        ))
    }
}

/// The boot file of a reply: option 67, else the BOOTP `file` header.
pub(crate) fn boot_file(m: &Message) -> Option<String> {
    if let Some(DhcpOption::BootfileName(f)) = m.opts().get(OptionCode::BootfileName) {
        return Some(
            String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string(),
        );
    }
    m.fname()
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string()
        })
        .filter(|f| !f.is_empty())
}

/// Checks a proxy reply: from us, no address offered, `PXEClient`, the expected boot file.
pub(crate) fn check_reply(m: &Message, what: &str, expect_file: &str) -> Result<(), String> {
    if let Some(DhcpOption::ServerIdentifier(ip)) = m.opts().get(OptionCode::ServerIdentifier) {
        if *ip != SERVER_IP {
            return Err(format!("{what}: server identifier {ip}"));
        }
    } else {
        return Err(format!("{what}: no option 54"));
    }
    if m.yiaddr() != Ipv4Addr::UNSPECIFIED {
        return Err(format!("{what}: a proxy offered address {}", m.yiaddr()));
    }
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) if v.as_slice() == b"PXEClient" => {}
        other => return Err(format!("{what}: option 60 {other:?}")),
    }
    let file = boot_file(m).unwrap_or_default();
    if file != expect_file {
        return Err(format!(
            "{what}: boot file {file:?}, expected {expect_file:?}"
        ));
    }
    Ok(())
}
