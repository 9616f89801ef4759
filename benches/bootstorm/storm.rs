//! A storm: all machines at once, with bootfactory's memory and CPU measured.

use super::*;

pub(crate) struct StormResult {
    pub(crate) name: &'static str,
    pub(crate) clients: usize,
    pub(crate) reports: Vec<MachineReport>,
    pub(crate) failures: Vec<(usize, String)>,
    pub(crate) wall: Duration,
    pub(crate) strays: u64,
    /// Machines held at the gate before their initramfs request.
    pub(crate) gated: bool,
    /// bootfactory's memory before the storm (VmHWM just reset), at its end, and the largest
    /// figures sampled during it.
    pub(crate) mem_before: Mem,
    pub(crate) mem_after: Mem,
    pub(crate) mem_sampled: Mem,
    pub(crate) hwm_reset: bool,
    pub(crate) cpu: f64,
    /// CPU seconds of bootfactory's `tftp` thread during the storm.
    pub(crate) tftp_cpu: f64,
    /// `/metrics` asset counters added during the storm, by (counter, output kind).
    pub(crate) assets: BTreeMap<(String, String), u64>,
    /// UDP drops during the storm in bootfactory's namespace and in the machines'.
    pub(crate) udp_server: UdpCounters,
    pub(crate) udp_clients: UdpCounters,
}

/// Sums `image_factory_assets_*_total` by counter and `output_kind`.
pub(crate) fn asset_counters(metrics: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("image_factory_assets_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let kind = labels
            .split(',')
            .find_map(|l| l.strip_prefix("output_kind=\""))
            .map(|k| k.trim_end_matches('"').to_string())
            .unwrap_or_default();
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((name.to_string(), kind)).or_insert(0) += v as u64;
    }
    out
}

pub(crate) async fn scrape(client: &reqwest::Client) -> BTreeMap<(String, String), u64> {
    let url = format!("http://{SERVER_IP}:{HTTP_PORT}/metrics");
    match get_text(client, &url).await {
        Ok(text) => asset_counters(&text),
        Err(e) => {
            eprintln!("[bootstorm] cannot read /metrics: {e}");
            BTreeMap::new()
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn storm(
    name: &'static str,
    run: usize,
    clients: usize,
    gated: bool,
    pid: u32,
    dhcp: Arc<DhcpMux>,
    expect: Arc<Expect>,
    http: &reqwest::Client,
) -> StormResult {
    let before = scrape(http).await;
    let hwm_reset = reset_hwm(pid);
    let mem_before = mem(pid).unwrap_or_default();
    let cpu_before = cpu_seconds(pid);
    let tftp_cpu_before = thread_cpu_seconds(pid, "tftp");
    let strays_before = dhcp.strays.load(Ordering::Relaxed);
    let server_snmp = format!("/proc/{pid}/net/snmp");
    // The runtime's threads are all in the machines' namespace.
    let client_snmp = "/proc/thread-self/net/snmp";
    let udp_server_before = UdpCounters::read(&server_snmp);
    let udp_clients_before = UdpCounters::read(client_snmp);
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = gated.then(|| Gate::new(clients));
    let limit = expect.machine_timeout;
    for idx in 0..clients {
        let (dhcp, expect) = (dhcp.clone(), expect.clone());
        let ticket = Ticket(gate.clone());
        tasks.spawn(async move {
            let r = tokio::time::timeout(limit, machine(run, idx, dhcp, expect, ticket))
                .await
                .unwrap_or_else(|_| Err(format!("did not boot within {limit:?}")));
            (idx, r)
        });
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, Ok(r))) => reports.push(r),
            Ok((idx, Err(e))) => failures.push((idx, e)),
            Err(e) => failures.push((usize::MAX, format!("task failed: {e}"))),
        }
    }
    let wall = started.elapsed();
    let udp_server = UdpCounters::read(&server_snmp).since(udp_server_before);
    let udp_clients = UdpCounters::read(client_snmp).since(udp_clients_before);
    let mem_sampled = sampler.finish();
    let mem_after = mem(pid).unwrap_or_default();
    let cpu = cpu_seconds(pid) - cpu_before;
    let tftp_cpu = thread_cpu_seconds(pid, "tftp") - tftp_cpu_before;
    let after = scrape(http).await;
    let assets = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    failures.sort();
    StormResult {
        name,
        clients,
        reports,
        failures,
        wall,
        strays: dhcp.strays.load(Ordering::Relaxed) - strays_before,
        gated,
        mem_before,
        mem_after,
        mem_sampled,
        hwm_reset,
        cpu,
        tftp_cpu,
        assets,
        udp_server,
        udp_clients,
    }
}

/// What the storm thread runs.
pub(crate) struct Plan {
    pub(crate) clients: usize,
    pub(crate) cold_gate: bool,
    /// `cold` and/or `warm`, in order.
    pub(crate) storms: Vec<&'static str>,
}

/// Joins the clients namespace on this thread, then runs the storms on a runtime whose
/// threads (created here) inherit it.
pub(crate) fn storms(
    ns: &str,
    plan: Plan,
    pid: u32,
    expect: Expect,
) -> Result<Vec<StormResult>, String> {
    let Plan {
        clients,
        cold_gate,
        storms,
    } = plan;
    let fd = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .map_err(|e| format!("open namespace {ns}: {e}"))?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {ns}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        // Ready when /healthz answers from the client side of the bridge.
        let health = format!("http://{SERVER_IP}:{HTTP_PORT}/healthz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while get_text(&http, &health).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!("{health} did not answer within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dhcp =
            DhcpMux::bind().map_err(|e| format!("binding 0.0.0.0:68 on {CLIENT_IF}: {e}"))?;
        let expect = Arc::new(expect);
        let mut results = Vec::new();
        for (run, name) in storms.into_iter().enumerate() {
            eprintln!("[bootstorm] {name} storm: {clients} machines");
            let gated = name == "cold" && cold_gate;
            let r = storm(
                name,
                run,
                clients,
                gated,
                pid,
                dhcp.clone(),
                expect.clone(),
                &http,
            )
            .await;
            eprintln!(
                "[bootstorm] {name}: {}/{} booted in {:.2} s",
                r.reports.len(),
                r.clients,
                r.wall.as_secs_f64()
            );
            results.push(r);
        }
        Ok(results)
    })
}
