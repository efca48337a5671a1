//! Watches of the other autoscalers a consumer Deployment may already have: the
//! HorizontalPodAutoscalers, and KEDA's ScaledObjects when KEDA's CRD is installed. Their
//! caches tell the scaler which Deployments to leave alone ([`Caches::autoscalers`]).
//!
//! [`Caches::autoscalers`]: crate::context::Caches::autoscalers
use futures::{Stream, StreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use std::pin::Pin;
use tracing::{debug, info};

/// KEDA's ScaledObject (`keda.sh/v1alpha1`).
fn scaled_object_resource() -> ApiResource {
    ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: "ScaledObject".into(),
        plural: "scaledobjects".into(),
    }
}

/// Whether the API server serves KEDA's ScaledObjects (its CRD is installed).
async fn keda_installed(client: &Client) -> bool {
    match client.list_api_group_resources("keda.sh/v1alpha1").await {
        Ok(list) => list.resources.iter().any(|r| r.name == "scaledobjects"),
        Err(e) => {
            debug!(error = %e, "no KEDA ScaledObjects served");
            false
        }
    }
}

/// A stream that drives a watch (its items only fill a cache).
pub type Driver = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// The caches of HPAs and (when KEDA is installed) ScaledObjects in `namespace` (or all), and
/// the streams that fill them, for the caller to drive.
pub async fn watch(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<HorizontalPodAutoscaler>,
    Option<Store<DynamicObject>>,
    Vec<Driver>,
) {
    let hpas: Api<HorizontalPodAutoscaler> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (hpa_cache, writer) = reflector::store();
    let mut drivers: Vec<Driver> = vec![Box::pin(
        watcher(hpas, watcher::Config::default())
            .default_backoff()
            .modify(|h| h.meta_mut().managed_fields = None)
            .reflect(writer)
            .map(|_| ()),
    )];
    if !keda_installed(client).await {
        return (hpa_cache, None, drivers);
    }
    info!("KEDA is installed: Deployments its ScaledObjects target are not scaled");
    let ar = scaled_object_resource();
    let objects: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let writer = reflector::store::Writer::new(ar);
    let so_cache = writer.as_reader();
    drivers.push(Box::pin(
        watcher(objects, watcher::Config::default())
            .default_backoff()
            .modify(|o| o.metadata.managed_fields = None)
            .reflect(writer)
            .map(|_| ()),
    ));
    (hpa_cache, Some(so_cache), drivers)
}
