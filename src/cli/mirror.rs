//! `bootfactory mirror import|export|pull|list`: air-gap bundles and prefetching.
//!
//! When `bootfactory serve` answers on the admin socket they go through it
//! (`/api/v1/images…`: the service keeps serving while a bundle is imported; progress comes
//! back as NDJSON lines). Otherwise they open the data directory themselves, as the data
//! directory's owner when run as root (so the service can still open what they wrote).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::{Context, human_bytes, store_runtime};
use crate::assign::client::AdminClient;
use crate::config::Config;
use crate::oci::CatalogEntry;

#[derive(Subcommand, Debug)]
pub(super) enum MirrorCommand {
    /// Import an OCI image layout (directory, or tar/tar.gz/tar.zst of one) into the store.
    ///
    /// Accepts what `skopeo copy … oci:DIR` / `oci-archive:FILE`, `talosctl image
    /// cache-create`, crane and oras write. Images are recorded under the names in the
    /// layout's index.json (`org.opencontainers.image.ref.name` or `io.containerd.image.name`);
    /// entries that carry only a tag need --name. Restartable: blobs already stored are
    /// skipped, and an image is only listed once all its blobs are in.
    Import {
        /// Layout directory or archive.
        path: PathBuf,
        /// Repository for entries that name only a tag, e.g. ghcr.io/siderolabs/imager.
        #[arg(long, value_name = "REGISTRY/REPOSITORY")]
        name: Option<String>,
    },
    /// Write stored images to a tar of an OCI image layout (for another site's import).
    Export {
        /// Output file (written atomically).
        #[arg(long, short)]
        out: PathBuf,
        /// Images, e.g. ghcr.io/siderolabs/imager:v1.11.6 (missing content is pulled first
        /// unless offline).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Prefetch images (all platforms) from their upstream registries into the store.
    Pull {
        /// Images, e.g. ghcr.io/siderolabs/installer:v1.11.6.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List stored images with their sizes.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(cx: &Context, cmd: &MirrorCommand) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    store_runtime(&config)?.block_on(async {
        match super::service::connect(&config).await? {
            Some(client) => via_service(&client, cmd).await,
            None => mirror_command(config, cmd).await,
        }
    })
}

/// A terminal progress bar for long store operations (hidden when stderr is not a terminal).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(prefix: &str) -> Bar {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        Bar(bar)
    }
}

impl crate::oci::bundle::Progress for Bar {
    fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn message(&self, text: &str) {
        self.0.println(text);
    }
}

/// Direct mode: opens the data directory (no service answers on its socket).
async fn mirror_command(config: Config, cmd: &MirrorCommand) -> anyhow::Result<ExitCode> {
    use crate::oci::bundle;

    let data_dir = config.data_dir.clone();
    // Inputs and outputs that may need root are opened before acting as the owner.
    let archive = match cmd {
        MirrorCommand::Import { path, .. } if !path.is_dir() => Some(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
        _ => None,
    };
    let export_file = match cmd {
        MirrorCommand::Export { out, .. } => {
            let partial = bundle::partial_path(out);
            Some((
                std::fs::File::create(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?,
                partial,
            ))
        }
        _ => None,
    };
    // Filling a new data directory before the first `serve` (an air-gapped site preparing
    // its store) is what `import` and `pull` are for: they create one they were pointed at
    // (--data-dir, BOOTFACTORY_DATA_DIR or a configuration file), never the built-in default.
    if matches!(
        cmd,
        MirrorCommand::Import { .. } | MirrorCommand::Pull { .. }
    ) && data_dir != Config::default().data_dir
        && !data_dir.exists()
    {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        eprintln!("bootfactory: created data directory {}", data_dir.display());
    }
    let owner = crate::server::act_as_data_dir_owner(&data_dir)?;
    let direct = match crate::server::DirectStore::open(config) {
        Ok(d) => d,
        Err(e) => {
            if let Some((_, partial)) = &export_file {
                let _ = std::fs::remove_file(partial);
            }
            return Err(e);
        }
    };
    let result = direct_command(&direct, cmd, archive, export_file).await;
    // The store is closed (and flushed) as the owner before switching back.
    drop(direct);
    drop(owner);
    match (cmd, result) {
        (MirrorCommand::Export { out, .. }, Ok(code)) => {
            std::fs::rename(bundle::partial_path(out), out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            Ok(code)
        }
        (MirrorCommand::Export { out, .. }, Err(e)) => {
            let _ = std::fs::remove_file(bundle::partial_path(out));
            Err(e)
        }
        (_, result) => result,
    }
}

/// A mirror command on the opened store.
async fn direct_command(
    direct: &crate::server::DirectStore,
    cmd: &MirrorCommand,
    archive: Option<std::fs::File>,
    export_file: Option<(std::fs::File, PathBuf)>,
) -> anyhow::Result<ExitCode> {
    use crate::oci::ImageRef;
    use crate::oci::bundle;
    use crate::upstream::mirror::{PullProgress, Requester};

    let mirror = direct.mirror.clone();
    let catalog = mirror.catalog().clone();
    match cmd {
        MirrorCommand::Import { path, name } => {
            let name = parse_name(name.as_deref())?;
            let bar = Bar::new("import");
            let report = match archive {
                Some(file) => bundle::import_file(&catalog, file, path, name.as_ref(), &bar).await,
                None => bundle::import(&catalog, path, name.as_ref(), &bar).await,
            };
            bar.0.finish_and_clear();
            let report = report.with_context(|| format!("cannot import {}", path.display()))?;
            catalog.store().flush().await?;
            Ok(print_import(&report))
        }
        MirrorCommand::Export { out, images } => {
            let mut roots = Vec::new();
            for text in images {
                let r: ImageRef = text
                    .parse()
                    .with_context(|| format!("invalid image {text:?}"))?;
                let report = mirror
                    .pull(&r, Requester::Internal, &|_| {})
                    .await
                    .with_context(|| format!("cannot export {r}"))?;
                roots.push((r, report.digest.expect("pull reports the root")));
            }
            let (file, _) = export_file.context("the export file is opened first")?;
            let bar = Bar::new("export");
            let written = bundle::export_to_file(&catalog, &roots, file, out, &bar).await;
            bar.0.finish_and_clear();
            let written = written?;
            println!(
                "wrote {} ({} images, {} of blobs)",
                out.display(),
                roots.len(),
                human_bytes(written)
            );
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Pull { images } => {
            for text in images {
                let r: ImageRef = text
                    .parse()
                    .with_context(|| format!("invalid image {text:?}"))?;
                let bar = Bar::new("pull");
                // Bytes of the blob downloading now already shown (blobs come one by one).
                let current = std::sync::atomic::AtomicU64::new(0);
                let progress = |p: PullProgress| {
                    use std::sync::atomic::Ordering::Relaxed;
                    match p {
                        PullProgress::Planned { bytes, .. } => bar.0.set_length(bytes),
                        PullProgress::BlobBytes { written, .. } => bar
                            .0
                            .inc(written.saturating_sub(current.swap(written, Relaxed))),
                        PullProgress::BlobDone { size, .. } => {
                            bar.0.inc(size.saturating_sub(current.swap(0, Relaxed)))
                        }
                    }
                };
                let report = mirror.pull(&r, Requester::Internal, &progress).await;
                bar.0.finish_and_clear();
                let report = report.with_context(|| format!("cannot pull {r}"))?;
                println!(
                    "pulled {r} {}: {} manifests, {} blobs fetched ({}), {} already stored",
                    report.digest.map(|d| d.to_string()).unwrap_or_default(),
                    report.manifests,
                    report.blobs_fetched,
                    human_bytes(report.bytes_fetched),
                    report.blobs_cached
                );
            }
            catalog.store().flush().await?;
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::List { json } => {
            let entries = catalog.list()?;
            print_list(&entries, catalog.store().total_size(), *json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--name`: a repository without tag or digest.
fn parse_name(name: Option<&str>) -> anyhow::Result<Option<crate::oci::ImageName>> {
    name.map(|n| {
        crate::upstream::images::parse_repository(n).map_err(|e| anyhow::anyhow!("--name: {e}"))
    })
    .transpose()
}

/// Prints an import's report; failure when it named no image.
fn print_import(report: &crate::oci::bundle::ImportReport) -> ExitCode {
    for image in &report.images {
        println!("imported {} {}", image.reference, image.digest);
    }
    for skipped in &report.skipped {
        eprintln!("skipped: {skipped}");
    }
    println!(
        "{} images; {} blobs written ({}), {} already present",
        report.images.len(),
        report.blobs_written,
        human_bytes(report.bytes_written),
        report.blobs_skipped
    );
    if report.images.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `mirror list`: a table, or the entries as JSON.
fn print_list(entries: &[CatalogEntry], store_bytes: u64, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(entries)?);
        return Ok(());
    }
    println!("{:<70} {:>10}  DIGEST", "IMAGE", "SIZE");
    for e in entries {
        let partial = if e.missing_blobs > 0 {
            format!(" (partial: {} blobs missing)", e.missing_blobs)
        } else {
            String::new()
        };
        println!(
            "{:<70} {:>10}  {}{partial}",
            e.reference,
            human_bytes(e.stored_bytes),
            e.digest
        );
    }
    println!(
        "{} images, store total {}",
        entries.len(),
        human_bytes(store_bytes)
    );
    Ok(())
}

/// The mirror commands through the running service's admin API.
async fn via_service(client: &AdminClient, cmd: &MirrorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MirrorCommand::List { json } => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct List {
                images: Vec<CatalogEntry>,
                store_bytes: u64,
            }
            let value = client
                .request_json(
                    reqwest::Method::GET,
                    "/api/v1/images",
                    None,
                    "listing images",
                )
                .await?
                .unwrap_or_default();
            let list: List = serde_json::from_value(value)
                .context("listing images: the server's answer is not an image list")?;
            print_list(&list.images, list.store_bytes, *json)?;
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Import { path, name } => {
            let name = parse_name(name.as_deref())?;
            let (body, size) = upload_body(path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut req = client
                .request(reqwest::Method::POST, "/api/v1/images/import")
                .header("x-bundle-size", size.to_string())
                .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                .body(body);
            if let Some(name) = &name {
                req = req.query(&[("name", name.to_string())]);
            }
            let bar = Bar::new("import");
            let done = follow(client, req, &bar, &format!("importing {}", path.display())).await;
            bar.0.finish_and_clear();
            let report: crate::oci::bundle::ImportReport = serde_json::from_value(done?)
                .context("importing: the server's report is not an import report")?;
            Ok(print_import(&report))
        }
        MirrorCommand::Pull { images } => {
            let body = serde_json::json!({ "images": images });
            let req = client
                .request(reqwest::Method::POST, "/api/v1/images/pull")
                .json(&body);
            let bar = Bar::new("pull");
            let done = follow(client, req, &bar, "pulling").await;
            bar.0.finish_and_clear();
            let done = done?;
            for p in done
                .get("images")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
            {
                let s = |k: &str| {
                    p.get(k)
                        .map(|v| v.to_string().trim_matches('"').to_string())
                        .unwrap_or_default()
                };
                let n = |k: &str| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                println!(
                    "pulled {} {}: {} manifests, {} blobs fetched ({}), {} already stored",
                    s("image"),
                    s("digest"),
                    n("manifests"),
                    n("blobsFetched"),
                    human_bytes(n("bytesFetched")),
                    n("blobsCached")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Export { out, images } => {
            use tokio::io::AsyncWriteExt as _;
            let query: Vec<(&str, &str)> = images.iter().map(|i| ("image", i.as_str())).collect();
            let req = client
                .request(reqwest::Method::GET, "/api/v1/images/export")
                .query(&query);
            let resp = client.response(req, "exporting").await?;
            let partial = crate::oci::bundle::partial_path(out);
            let written = async {
                let mut file = tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("cannot create {}", partial.display()))?;
                let bar = Bar::new("export");
                let mut stream = resp.bytes_stream();
                let mut written = 0u64;
                use futures_util::StreamExt as _;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.context("exporting: the download broke off")?;
                    file.write_all(&chunk)
                        .await
                        .with_context(|| format!("cannot write {}", partial.display()))?;
                    written += chunk.len() as u64;
                    bar.0.set_position(written);
                }
                bar.0.finish_and_clear();
                file.sync_all().await?;
                anyhow::Ok(written)
            }
            .await;
            let written = match written {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            };
            std::fs::rename(&partial, out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "wrote {} ({} images, {})",
                out.display(),
                images.len(),
                human_bytes(written)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sends `req` and follows its NDJSON progress on `bar`; the `done` event's report, or the
/// `error` event's message as the error.
async fn follow(
    client: &AdminClient,
    req: reqwest::RequestBuilder,
    bar: &Bar,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    use crate::oci::bundle::Event;
    use futures_util::StreamExt as _;
    let resp = client.response(req, what).await?;
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: Event = serde_json::from_slice(&line)
                .with_context(|| format!("{what}: the server sent a line that is not an event"))?;
            match event {
                Event::Progress { bytes, total } => {
                    if let Some(total) = total {
                        bar.0.set_length(total);
                    }
                    bar.0.set_position(bytes);
                }
                Event::Message { text } => bar.0.println(text),
                Event::Done { report } => return Ok(report),
                Event::Error { message } => anyhow::bail!("{what}: {message}"),
            }
        }
        if pending.len() > 1 << 20 {
            anyhow::bail!("{what}: the server sent an overlong line");
        }
        match stream.next().await {
            Some(chunk) => pending.extend_from_slice(
                &chunk
                    .with_context(|| format!("{what}: the connection to the service broke off"))?,
            ),
            None => anyhow::bail!("{what}: the service ended the answer without a result"),
        }
    }
}

/// The bundle as a request body: an archive as it is, a layout directory as a tar made on
/// the fly. With its size (the directory's files' total, for progress).
async fn upload_body(path: &std::path::Path) -> anyhow::Result<(reqwest::Body, u64)> {
    if !path.is_dir() {
        let file = tokio::fs::File::open(path).await?;
        let size = file.metadata().await?.len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        return Ok((reqwest::Body::wrap_stream(stream), size));
    }
    if !path.join("index.json").is_file() {
        anyhow::bail!("not an OCI image layout (no index.json)");
    }
    let size = dir_size(path)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let dir = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let writer = ChunkSender {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let mut tar = tar::Builder::new(writer);
        tar.follow_symlinks(true);
        let r = tar
            .append_dir_all(".", &dir)
            .and_then(|()| tar.into_inner())
            .and_then(|mut w| std::io::Write::flush(&mut w));
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((reqwest::Body::wrap_stream(stream), size))
}

fn dir_size(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::metadata(entry.path())?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Tar output sent as request-body chunks.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload ended"))
    }
}
