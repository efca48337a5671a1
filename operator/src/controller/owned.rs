//! The generic reconcile step for every object the operator owns: observe it (watch cache
//! first, the API server on a miss), apply the built object with server-side apply under one
//! field manager ([`MANAGER`]) only when it differs, and report a creation or a repair as an
//! Event on the resource. A new owned kind is one [`OwnedKind`] impl (its cache) and one
//! [`Owner::ensure`] line in the reconcile.
use crate::builders::MANAGER;
use crate::context::{Caches, Context, cached};
use crate::crd::SwappoMessaging;
use crate::decisions::diff::needs_apply;
use crate::error::{Error, Result};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tracing::info;

/// A kind the operator owns, with the watch cache that holds its objects.
pub trait OwnedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The cache of this kind in `caches`.
    fn cache(caches: &Caches) -> &Store<Self>;
}

impl OwnedKind for Secret {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.secrets
    }
}

impl OwnedKind for ConfigMap {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.config_maps
    }
}

impl OwnedKind for PersistentVolumeClaim {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.claims
    }
}

impl OwnedKind for Deployment {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.deployments
    }
}

impl OwnedKind for Service {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.services
    }
}

impl OwnedKind for StatefulSet {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.stateful_sets
    }
}

impl OwnedKind for NetworkPolicy {
    fn cache(caches: &Caches) -> &Store<Self> {
        &caches.network_policies
    }
}

/// An observed object and where it came from.
pub enum Seen<K> {
    /// The watch cache's copy (as fresh as the last watch event).
    Cached(Arc<K>),
    /// A live read from the API server (`None`: it does not exist).
    Live(Option<K>),
}

impl<K: Clone> Seen<K> {
    /// The object, if it exists (as far as this observation knows).
    pub fn current(&self) -> Option<K> {
        match self {
            Seen::Cached(k) => Some(K::clone(k)),
            Seen::Live(k) => k.clone(),
        }
    }

    /// Whether the object exists (as far as this observation knows).
    pub fn exists(&self) -> bool {
        match self {
            Seen::Cached(_) => true,
            Seen::Live(k) => k.is_some(),
        }
    }
}

/// Outcome of an apply.
enum Applied<K> {
    Unchanged(K),
    Created(K),
    Repaired(K),
}

impl<K> Applied<K> {
    fn into_inner(self) -> K {
        match self {
            Applied::Unchanged(k) | Applied::Created(k) | Applied::Repaired(k) => k,
        }
    }
}

/// One reconcile's access to the objects of one resource, in its namespace.
pub struct Owner<'a> {
    /// The resource.
    pub sm: &'a SwappoMessaging,
    /// Its namespace.
    pub ns: &'a str,
    /// The shared context.
    pub ctx: &'a Context,
}

impl Owner<'_> {
    fn api<K: OwnedKind>(&self) -> Api<K> {
        Api::namespaced(self.ctx.client.clone(), self.ns)
    }

    /// A live read of `name`, counted in the reads metric.
    pub async fn get<K: OwnedKind>(&self, name: &str) -> Result<Option<K>> {
        self.ctx.metrics.read(&K::kind(&()));
        self.api::<K>()
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("get {} {name}", K::kind(&()))))
    }

    /// `name` from the cache, else from the API server.
    pub async fn observe<K: OwnedKind>(&self, name: &str) -> Result<Seen<K>> {
        let cache = self.ctx.caches.get().map(K::cache);
        match cached(cache, self.ns, name) {
            Some(k) => Ok(Seen::Cached(k)),
            None => Ok(Seen::Live(self.get(name).await?)),
        }
    }

    /// Observes `desired`'s object and applies `desired` when it differs (see
    /// [`Owner::ensure_seen`]); the object as it is now.
    pub async fn ensure<K: OwnedKind>(&self, desired: K) -> Result<K> {
        let seen = self.observe(&desired.name_any()).await?;
        self.ensure_seen(desired, seen).await
    }

    /// Applies `desired` unless the observed object already has everything it sets, and
    /// reports a creation or a repair. A cached observation that differs is confirmed by a
    /// live read first (the cache may lag behind). The object as it is now.
    pub async fn ensure_seen<K: OwnedKind>(&self, desired: K, seen: Seen<K>) -> Result<K> {
        let applied = self.apply(&desired, seen).await?;
        self.report(&applied).await;
        Ok(applied.into_inner())
    }

    async fn apply<K: OwnedKind>(&self, desired: &K, seen: Seen<K>) -> Result<Applied<K>> {
        let kind = K::kind(&());
        let name = desired.name_any();
        let differs = |observed: Option<&K>| {
            needs_apply(desired, observed).map_err(|source| Error::Serialize {
                what: format!("{kind} {name}"),
                source,
            })
        };
        let observed = match seen {
            Seen::Cached(k) if !differs(Some(&k))? => return Ok(Applied::Unchanged(K::clone(&k))),
            Seen::Cached(_) => self.get(&name).await?,
            Seen::Live(k) => k,
        };
        match observed {
            Some(current) if !differs(Some(&current))? => Ok(Applied::Unchanged(current)),
            observed => {
                self.ctx.may_write()?;
                let applied = self
                    .api::<K>()
                    .patch(
                        &name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(desired),
                    )
                    .await
                    .map_err(Error::kube(format!("apply {kind} {name}")))?;
                self.ctx.metrics.wrote(&kind);
                Ok(if observed.is_some() {
                    Applied::Repaired(applied)
                } else {
                    Applied::Created(applied)
                })
            }
        }
    }

    /// Creates `desired` when its object does not exist, and leaves an existing one alone
    /// (for objects whose spec cannot change after creation).
    pub async fn create_once<K: OwnedKind>(&self, desired: K) -> Result<()> {
        let name = desired.name_any();
        if self.observe::<K>(&name).await?.exists() {
            return Ok(());
        }
        self.ctx.may_write()?;
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        };
        match self.api::<K>().create(&params, &desired).await {
            Ok(_) => {
                self.ctx.metrics.wrote(&K::kind(&()));
                self.report(&Applied::Created(desired)).await;
                Ok(())
            }
            // Created meanwhile (by a previous reconcile whose result the cache had not seen
            // yet): nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(source) => Err(Error::Kube {
                action: format!("create {} {name}", K::kind(&())),
                source,
            }),
        }
    }

    /// Deletes `obj` (by name, with a precondition on its uid, so an object re-created under
    /// the same name meanwhile is never hit) with `propagation` for its dependents, and
    /// reports it as an Event with `reason`. Already gone (or replaced): nothing to do.
    pub async fn delete<K: OwnedKind>(
        &self,
        obj: &K,
        propagation: DeleteParams,
        reason: &str,
    ) -> Result<()> {
        let (kind, name) = (K::kind(&()), obj.name_any());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.uid(),
                resource_version: None,
            }),
            ..propagation
        };
        self.ctx.may_write()?;
        match self.api::<K>().delete(&name, &params).await {
            Ok(_) => {
                self.ctx.metrics.wrote(&kind);
                let note = format!("deleted {kind} {name}");
                info!("{note}");
                self.ctx
                    .event_about(self.sm, false, reason, note, Some(obj.object_ref(&())))
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(Error::Kube {
                action: format!("delete {kind} {name}"),
                source,
            }),
        }
    }

    /// Publishes Created / Updated Events for an apply's outcome.
    async fn report<K: OwnedKind>(&self, applied: &Applied<K>) {
        let (reason, verb, obj) = match applied {
            Applied::Unchanged(_) => return,
            Applied::Created(k) => ("Created", "created", k),
            Applied::Repaired(k) => ("Updated", "put back the desired state of", k),
        };
        let note = format!("{verb} {} {}", K::kind(&()), obj.name_any());
        info!("{note}");
        self.ctx
            .event_about(self.sm, false, reason, note, Some(obj.object_ref(&())))
            .await;
    }
}
