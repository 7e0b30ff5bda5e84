//! `trustmount serve`: loads the sources, opens the store, connects to the cluster (unless
//! standalone), then serves CSI until SIGTERM/SIGINT; Probe says ready once the adopted volumes'
//! caches are synced and the volumes refreshed too.

use std::sync::Arc;

use anyhow::Context;
use trustmount::csi::{self, IdentityService, NodeService};
use trustmount::events::PodEvents;
use trustmount::metrics::{self, Metrics};
use trustmount::node::Node;
use trustmount::readiness::{Condition, Readiness};
use trustmount::rotation::Rotation;
use trustmount::sources::cluster::{Cluster, Defaults, DefaultsFlags, Mode};
use trustmount::sources::{self, ClusterAccess, Sources};
use trustmount::volume::{Store, StoreConfig};

use super::Failure;
use super::args::ServeArgs;

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
    let readiness = Readiness::new(Condition::DAEMON);
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
    readiness.mark(Condition::SourcesLoaded);
    let store = Store::open(StoreConfig {
        state_dir: args.state_dir,
        kubelet_dir: args.kubelet_dir,
        tmpfs_size_bytes: args.store_size,
    })
    .context("opening the volume store")
    .map_err(Failure::Runtime)?;
    readiness.mark(Condition::StoreOpen);
    tracing::info!(system_roots = sources.catalog().system_count(), "certificate sources loaded");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime").map_err(Failure::Runtime)?;
    let _guard = runtime.enter();
    let client =
        runtime.block_on(mode.client()).context("configuring the Kubernetes client").map_err(Failure::Config)?;
    // Events go to the pods, written with the driver's identity.
    let events =
        client.as_ref().map_or_else(PodEvents::off, |client| PodEvents::new(client.driver.clone(), &args.node_id));
    let cluster_changes = match (client, &mode) {
        (Some(client), _) => {
            match &mode {
                Mode::Kubeconfig(path) => {
                    tracing::info!(mode = %mode, kubeconfig = %path.display(), "cluster sources on");
                }
                Mode::Standalone { .. } | Mode::InCluster => tracing::info!(mode = %mode, "cluster sources on"),
            }
            if !defaults.is_empty() {
                tracing::info!(
                    cluster_trust_bundles = defaults.trust_bundles.len(),
                    signers = defaults.signers.len(),
                    config_maps = defaults.config_maps.len(),
                    namespace = %defaults.namespace,
                    "default sources added to every volume that does not set defaults: \"false\""
                );
            }
            // Reads the CSIDriver (podInfoOnMount) in the background, retrying until it answers.
            let (cluster, changes) = Cluster::new(client, defaults, &args.driver_name);
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
    if let Some(addr) = args.metrics_addr {
        let exporter = metrics.exporter(store.clone(), Arc::clone(&sources));
        runtime.block_on(metrics::serve(addr, exporter)).context("serving metrics").map_err(Failure::Runtime)?;
    }
    let (watch, changes) = sources::watch_files(&sources.watched_files())
        .context("watching the source files")
        .map_err(Failure::Runtime)?;
    let rotation = Rotation::new(Arc::clone(&sources), store.clone(), metrics.clone(), events);
    // Its first pass refreshes the adopted volumes; Probe says ready after it.
    runtime.spawn(Arc::clone(&rotation).run(changes, cluster_changes, readiness.clone()));

    let identity = IdentityService::new(args.driver_name, readiness);
    let node = NodeService::new(args.node_id, Node::new(sources, store, rotation), metrics);
    let served = runtime.block_on(csi::serve(&args.endpoint, identity, node, shutdown_signal()));
    drop(watch);
    served.with_context(|| format!("serving on {}", args.endpoint.path().display())).map_err(Failure::Runtime)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can still serve; the process then dies by default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
}
