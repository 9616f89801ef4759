//! One machine: the whole network boot of one simulated UEFI x86-64 machine.

use super::*;

#[derive(Debug, Clone, Default)]
pub(crate) struct MachineReport {
    pub(crate) stages: [Duration; 7],
    pub(crate) total: Duration,
    pub(crate) dhcp_resends: u32,
    pub(crate) tftp_resends: u32,
    /// TFTP requests refused with "server busy" and asked again.
    pub(crate) tftp_busy: u32,
    pub(crate) tftp_bytes: u64,
    pub(crate) tftp_blksize: usize,
    pub(crate) kernel_bytes: u64,
    pub(crate) initrd_bytes: u64,
}

/// What every machine must get.
pub(crate) struct Expect {
    pub(crate) schematic: String,
    pub(crate) ipxe_size: u64,
    /// Longest one machine may take for its whole boot, and one HTTP request (the cold
    /// initramfs waits for a build, then streams while every other machine does).
    pub(crate) machine_timeout: Duration,
}

/// Locally administered, unicast; the same machines boot in every storm.
pub(crate) fn machine_mac(idx: usize) -> [u8; 6] {
    [0x02, 0xbf, 0x57, 0x00, (idx >> 8) as u8, idx as u8]
}

pub(crate) fn xid(run: usize, idx: usize, step: u32) -> u32 {
    0xb500_0000 | ((run as u32 & 0xf) << 20) | ((idx as u32 & 0xffff) << 4) | (step & 0xf)
}

pub(crate) fn uuid(idx: usize) -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..4].copy_from_slice(b"bfst");
    u[12..].copy_from_slice(&(idx as u32).to_be_bytes());
    u
}

/// Holds every machine of a storm before its initramfs request until all machines have
/// arrived or failed, so that all initramfs requests of the cold storm meet the one build.
pub(crate) struct Gate {
    pub(crate) remaining: AtomicUsize,
    pub(crate) open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    pub(crate) fn new(machines: usize) -> Arc<Gate> {
        Arc::new(Gate {
            remaining: AtomicUsize::new(machines),
            open: tokio::sync::watch::Sender::new(machines == 0),
        })
    }

    pub(crate) fn leave(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.send_replace(true);
        }
    }
}

/// A machine's place at the [`Gate`] (none: no gate). Dropping it unused (the machine
/// failed or timed out) lets the others through without it.
pub(crate) struct Ticket(pub(crate) Option<Arc<Gate>>);

impl Ticket {
    pub(crate) async fn arrive(&mut self) {
        if let Some(gate) = self.0.take() {
            let mut open = gate.open.subscribe();
            gate.leave();
            let _ = open.wait_for(|o| *o).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(gate) = self.0.take() {
            gate.leave();
        }
    }
}

pub(crate) async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {}", text.trim()));
    }
    Ok(text)
}

/// Streams `url` to the end; checks the byte count against `Content-Length`.
pub(crate) async fn download(client: &reqwest::Client, url: &str) -> Result<u64, String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("GET {url}: {status}: {}", body.trim()));
    }
    let length: u64 = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("GET {url}: no Content-Length"))?;
    let mut got = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: after {got} bytes: {e}"))?
    {
        got += chunk.len() as u64;
    }
    if got != length {
        return Err(format!("GET {url}: {got} bytes, Content-Length {length}"));
    }
    Ok(got)
}

/// The URL after `word` on the first line starting with it.
pub(crate) fn script_url(script: &str, word: &str) -> Option<String> {
    script.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        if parts.next() != Some(word) {
            return None;
        }
        parts
            .find(|p| p.starts_with("http://") || p.starts_with("https://"))
            .map(str::to_string)
    })
}

pub(crate) async fn machine(
    run: usize,
    idx: usize,
    dhcp: Arc<DhcpMux>,
    expect: Arc<Expect>,
    mut gate: Ticket,
) -> Result<MachineReport, String> {
    let started = Instant::now();
    let mut r = MachineReport::default();
    let mac = machine_mac(idx);
    let mac_text = bootfactory::mac::MacAddr(mac).to_string();
    let broadcast = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, 67));
    let proxy = SocketAddr::V4(SocketAddrV4::new(SERVER_IP, 4011));
    let ipxe = bootfactory::ipxe::EFI_X64;

    // Firmware: DISCOVER → proxy OFFER, REQUEST on 4011 → ACK.
    let t = Instant::now();
    let mut discover = PxeRequest::discover(mac, ARCH);
    discover.vendor_class = Some(FIRMWARE_VENDOR_CLASS.into());
    discover.uuid = Some(uuid(idx));
    discover.xid = xid(run, idx, 0);
    let (offer, n) = dhcp
        .transact(&discover, broadcast, MessageType::Offer)
        .await?;
    r.dhcp_resends += n;
    check_reply(&offer, "firmware OFFER", ipxe)?;
    let mut request = PxeRequest::proxy_request(mac, ARCH, CLIENT_IP);
    request.vendor_class = Some(FIRMWARE_VENDOR_CLASS.into());
    request.uuid = Some(uuid(idx));
    request.xid = xid(run, idx, 1);
    let (ack, n) = dhcp.transact(&request, proxy, MessageType::Ack).await?;
    r.dhcp_resends += n;
    check_reply(&ack, "firmware ACK", ipxe)?;
    let next_server = ack.siaddr();
    if next_server != SERVER_IP {
        return Err(format!("firmware ACK: next server {next_server}"));
    }
    r.stages[0] = t.elapsed();

    // TFTP.
    let t = Instant::now();
    let got = loop {
        match tftp_get(SocketAddr::V4(SocketAddrV4::new(next_server, 69)), ipxe).await {
            Ok(got) => break got,
            Err(TftpError::Busy(_)) if r.tftp_busy < TFTP_BUSY_RETRIES => {
                r.tftp_busy += 1;
                tokio::time::sleep(TFTP_BUSY_RETRY_AFTER).await;
            }
            Err(TftpError::Busy(e) | TftpError::Failed(e)) => return Err(e),
        }
    };
    if got.bytes != expect.ipxe_size || got.tsize.is_some_and(|s| s != got.bytes) {
        return Err(format!(
            "tftp {ipxe}: {} bytes (tsize {:?}), the embedded binary has {}",
            got.bytes, got.tsize, expect.ipxe_size
        ));
    }
    r.tftp_bytes = got.bytes;
    r.tftp_resends = got.resends;
    r.tftp_blksize = got.blksize;
    r.stages[1] = t.elapsed();

    // iPXE: DHCP again, now as iPXE → the boot script URL.
    let t = Instant::now();
    let script = format!("http://{SERVER_IP}:{HTTP_PORT}/boot/{mac_text}.ipxe");
    let mut discover = PxeRequest::ipxe_discover(mac, ARCH, &IPXE_FEATURES);
    discover.vendor_class = Some(IPXE_VENDOR_CLASS.into());
    discover.uuid = Some(uuid(idx));
    discover.xid = xid(run, idx, 2);
    let (offer, n) = dhcp
        .transact(&discover, broadcast, MessageType::Offer)
        .await?;
    r.dhcp_resends += n;
    check_reply(&offer, "iPXE OFFER", &script)?;
    let request = PxeRequest {
        msg_type: 3,
        ciaddr: CLIENT_IP,
        broadcast: false,
        xid: xid(run, idx, 3),
        ..discover.clone()
    };
    let (ack, n) = dhcp.transact(&request, proxy, MessageType::Ack).await?;
    r.dhcp_resends += n;
    check_reply(&ack, "iPXE ACK", &script)?;
    r.stages[2] = t.elapsed();

    // HTTP: boot script → /pxe script → kernel, initrd. One client per machine (its own
    // connection), as iPXE.
    let client = reqwest::Client::builder()
        .no_proxy()
        .user_agent(IPXE_USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        // Below bootfactory's `http.idleTimeoutSeconds` (60 s): a machine held at the cold
        // storm's gate longer than that must not send its initramfs request on a connection
        // the server is closing (5 of 5,000 machines failed so); it opens a new one, as
        // any client that keeps connections should.
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(expect.machine_timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let t = Instant::now();
    let boot = get_text(&client, &script).await?;
    let chain =
        script_url(&boot, "chain").ok_or_else(|| format!("{script}: no chain URL in:\n{boot}"))?;
    let want_chain = format!(
        "http://{SERVER_IP}:{HTTP_PORT}/pxe/{}/{VERSION}/metal-amd64",
        expect.schematic
    );
    if chain != want_chain {
        return Err(format!("{script} chains {chain}, expected {want_chain}"));
    }
    let pxe = get_text(&client, &chain).await?;
    let kernel = script_url(&pxe, "kernel").ok_or_else(|| format!("{chain}: no kernel"))?;
    let initrd = script_url(&pxe, "initrd").ok_or_else(|| format!("{chain}: no initrd"))?;
    r.stages[3] = t.elapsed();

    let t = Instant::now();
    r.kernel_bytes = download(&client, &kernel).await?;
    r.stages[4] = t.elapsed();
    let t = Instant::now();
    gate.arrive().await;
    r.stages[5] = t.elapsed();
    let t = Instant::now();
    r.initrd_bytes = download(&client, &initrd).await?;
    r.stages[6] = t.elapsed();
    r.total = started.elapsed();
    Ok(r)
}
