//! `trustmount serve`: loads the sources, opens the store, connects to the cluster (unless
//! standalone), then serves CSI and the kubelet's plugin registration (unless
//! `--kubelet-registration=false`) until SIGTERM/SIGINT; Probe says ready once the adopted volumes'
//! caches are synced and the volumes refreshed too. On SIGTERM/SIGINT it stops accepting calls,
//! lets those in flight finish (for at most [`SHUTDOWN_GRACE`]) and exits 0 with every mount in
//! place: a DaemonSet rolling update must not take running pods' trust stores away, and the
//! next start adopts them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use trustmount::clock::Clock;
use trustmount::csi::{self, IdentityService, NodeService, RegistrationService};
use trustmount::events::{Limits, PodEvents};
use trustmount::metrics::Metrics;
use trustmount::node::{Node, Rotation};
use trustmount::readiness::{Condition, Readiness};
use trustmount::sources::cluster::{Cluster, Defaults, DefaultsFlags, Mode};
use trustmount::sources::{self, ClusterAccess, Sources};
use trustmount::volume::{Store, StoreConfig};

use super::Failure;
use super::args::ServeArgs;
use super::exporter::{self, Exporter, Routes};
use super::health::Health;

/// How long calls in flight get after SIGTERM: under the 30 s a pod gets by default
/// (`terminationGracePeriodSeconds`) before its SIGKILL. A publish cut short is safe anyway (the
/// next start completes or rolls it back); this only spares the kubelet a retry.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// How long blocking work still running after that may hold the exit.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    if args.node_id.is_empty() {
        return Err(Failure::Config(anyhow::anyhow!("--node-id (or NODE_NAME) must not be empty")));
    }
    let defaults = Defaults::parse(&DefaultsFlags {
        trust_bundles: &args.defaults.cluster_trust_bundles,
        signer_names: &args.defaults.signer_names,
        label_selector: args.defaults.label_selector.as_deref(),
        config_maps: &args.defaults.config_maps,
        namespace: args.namespace.as_deref(),
    })
    .context("the default sources")
    .map_err(Failure::Config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime").map_err(Failure::Runtime)?;
    // Before the store opens: a SIGTERM during start-up then ends in a clean exit once the
    // store is reconciled, instead of the default action.
    let stop = {
        let _guard = runtime.enter();
        stop_on_signal()
    };
    let served = serve_in(&runtime, args, defaults, stop);
    runtime.shutdown_timeout(BLOCKING_GRACE);
    served
}

fn serve_in(
    runtime: &tokio::runtime::Runtime,
    args: ServeArgs,
    defaults: Defaults,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Failure> {
    let readiness = Readiness::new(Condition::DAEMON);
    let registration = args.registration.resolve(&args.kubelet_dir, &args.driver_name).map(|(socket, endpoint)| {
        tracing::info!(socket = %socket.display(), endpoint = %endpoint.display(), "registering with the kubelet");
        RegistrationService::new(socket, args.driver_name.clone(), &endpoint)
    });
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let mode = Mode::choose(args.standalone, args.kubeconfig, in_pod);
    let mut sources = Sources::load(sources::Config {
        system_roots: args.sources.system_roots,
        extra_pem: args.extra_pem,
        max_source_size: args.sources.max_source_size,
    })
    .context("loading certificate sources")
    .map_err(Failure::Config)?;
    let metrics = Metrics::new();
    sources.set_metrics(metrics.clone());
    let limits = args.limits.limits();
    sources.set_max_volume_certificates(limits.volume_certificates);
    readiness.mark(Condition::SourcesLoaded);
    // The one clock of the driver: the store, the rotation and the node read the time from it.
    let clock = Clock::system();
    let store = Store::open(
        StoreConfig { state_dir: args.state_dir, kubelet_dir: args.kubelet_dir, tmpfs_size_bytes: args.store_size },
        clock.clone(),
    )
    .context("opening the volume store")
    .map_err(Failure::Runtime)?;
    store.set_budgets(trustmount::volume::Budgets::from(&limits));
    readiness.mark(Condition::StoreOpen);
    tracing::info!(system_roots = sources.catalog().system_count(), "certificate sources loaded");
    let _guard = runtime.enter();
    let client = runtime
        .block_on(mode.client(&args.node_id))
        .context("configuring the Kubernetes client")
        .map_err(Failure::Config)?;
    // Events go to the pods, written with the driver's identity, within the default limits.
    let events = client.as_ref().map_or_else(PodEvents::off, |client| {
        PodEvents::new(client.driver.clone(), &args.node_id, Limits::default(), clock.clone(), metrics.clone())
    });
    let cluster_changes = match (client, &mode) {
        (Some(client), _) => {
            match &mode {
                Mode::Kubeconfig(path) => {
                    tracing::info!(mode = %mode, kubeconfig = %path.display(), "cluster sources on");
                }
                Mode::Standalone { .. } | Mode::InCluster => tracing::info!(mode = %mode, "cluster sources on"),
            }
            if !defaults.is_empty() {
                let counts: Vec<String> =
                    defaults.named.iter().map(|(tag, refs)| format!("{tag}={}", refs.len())).collect();
                tracing::info!(
                    sources = %counts.join(","),
                    namespace = %defaults.namespace,
                    "default sources added to every volume that does not set defaults: \"false\""
                );
            }
            // Reads the CSIDriver (podInfoOnMount) in the background, retrying until it answers.
            let (cluster, changes) = Cluster::new(client, defaults, &args.driver_name, limits);
            sources.set_cluster(ClusterAccess::Connected(cluster));
            Some(changes)
        }
        (None, Mode::Standalone { reason }) => {
            tracing::info!(mode = %mode, reason, "cluster sources off: local sources only");
            sources.set_cluster(ClusterAccess::Standalone(reason));
            None
        }
        (None, Mode::Kubeconfig(_) | Mode::InCluster) => {
            return Err(Failure::Runtime(anyhow::anyhow!("the Kubernetes client could not be built")));
        }
    };
    let sources = Arc::new(sources);
    let exporter =
        args.metrics_addr.map(|_| Exporter::new(&metrics, store.clone(), Arc::clone(&sources), clock.clone()));
    let health = args.health_addr.map(|_| {
        Health::new(
            args.endpoint.path().to_owned(),
            readiness.clone(),
            registration.as_ref().map(RegistrationService::answers),
        )
    });
    for (addr, routes) in http_listeners(args.metrics_addr, exporter, args.health_addr, health) {
        runtime.block_on(exporter::serve(addr, routes)).context("serving HTTP").map_err(Failure::Runtime)?;
    }
    let (watch, changes) = sources::watch_files(&sources.watched_files())
        .context("watching the source files")
        .map_err(Failure::Runtime)?;
    let rotation = Rotation::new(Arc::clone(&sources), store.clone(), metrics.clone(), events, clock.clone());
    // Its first pass refreshes the adopted volumes; Probe says ready after it.
    runtime.spawn(Arc::clone(&rotation).run(changes, cluster_changes, readiness.clone()));

    let identity = IdentityService::new(args.driver_name, readiness);
    let node = NodeService::new(args.node_id, Node::new(sources, store, rotation, clock), metrics, limits);
    let served = runtime.block_on(async {
        let serving = csi::serve(&args.endpoint, identity, node, registration, stopped(stop.clone()));
        tokio::select! {
            served = serving => served,
            () = async { stopped(stop).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still in flight at the end of the shutdown grace period; exiting without their answers");
                Ok(())
            }
        }
    });
    drop(watch);
    served.with_context(|| format!("serving on {}", args.endpoint.path().display())).map_err(Failure::Runtime)?;
    tracing::info!("shut down; volumes stay mounted");
    Ok(())
}

/// One listener per address: metrics and health on one port when both flags name the same
/// address.
fn http_listeners(
    metrics_addr: Option<SocketAddr>,
    metrics: Option<Exporter>,
    health_addr: Option<SocketAddr>,
    health: Option<Health>,
) -> Vec<(SocketAddr, Routes)> {
    match (metrics_addr, health_addr) {
        (Some(m), Some(h)) if m == h => vec![(m, Routes { metrics, health })],
        _ => {
            let metrics = metrics_addr.map(|addr| (addr, Routes { metrics, health: None }));
            let health = health_addr.map(|addr| (addr, Routes { metrics: None, health }));
            metrics.into_iter().chain(health).collect()
        }
    }
}

/// Registers SIGTERM and SIGINT now (a signal from here on is never the default action) and
/// returns a receiver that turns true at the first of them. Call inside the runtime.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::watch::channel(false);
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                tracing::info!("shutting down: no new calls, finishing the ones in flight");
                let _ = tx.send(true);
            });
        }
        (Err(error), _) | (_, Err(error)) => {
            // Serving still works; a signal then ends the process by its default action.
            tracing::warn!(%error, "cannot handle SIGTERM/SIGINT; they will end the driver at once");
            tokio::spawn(async move {
                std::future::pending::<()>().await;
                drop(tx);
            });
        }
    }
    rx
}

/// Resolves once `stop` turns true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        // The sender is held until a signal: never reached, but never a reason to stop either.
        std::future::pending::<()>().await;
    }
}
