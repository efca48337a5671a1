//! The local Kubernetes control plane for tests (`make cluster-up`): a client from the
//! kubeconfig, a namespace of its own per test ([`TestNamespace`]), clients acting as a
//! ServiceAccount, and bounded waits.
//!
//! The kubeconfig is `KUBECONFIG` when set (`make test` sets it to the local cluster's),
//! otherwise the local cluster's admin kubeconfig at `$SWAPPO_KUBECONFIG`, or its default
//! `$SWAPPO_STATE/cluster/kubeconfig` (`~/.cache/swappo/state/cluster/kubeconfig`).
use crate::{block_on_cleanup, unique_name};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

/// Label put on every test namespace, so leftovers of killed test runs can be found:
/// `kubectl get ns -l swappo.dev/test-namespace=true`.
pub const TEST_NAMESPACE_LABEL: &str = "swappo.dev/test-namespace";

/// How long [`TestNamespace::new`] waits for the namespace's `default` ServiceAccount (created
/// by the controller manager within a second or two; pods are refused until it exists).
const DEFAULT_SA_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the control-plane helpers.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or understood.
    #[error(
        "cannot load kubeconfig {path}: {source} (is the control plane up? run `make cluster-up`)"
    )]
    Kubeconfig {
        /// Where it was looked for.
        path: String,
        /// Why it failed.
        source: kube::config::KubeconfigError,
    },
    /// A client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// The call that failed.
        what: String,
        /// The API error.
        source: kube::Error,
    },
    /// The watch behind a wait failed.
    #[error("watching for {what}: {source}")]
    Watch {
        /// What was awaited.
        what: String,
        /// Why the watch failed.
        source: kube::runtime::wait::Error,
    },
    /// A wait ran out of time (a failure guard, not a timing assertion).
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// The kubeconfig path the helpers use when `KUBECONFIG` is not set: `$SWAPPO_KUBECONFIG`,
/// else `$SWAPPO_STATE/cluster/kubeconfig`, else under `$SWAPPO_CACHE` or `~/.cache/swappo`
/// (the same defaults as `scripts/env.sh`).
pub fn local_kubeconfig_path() -> PathBuf {
    kubeconfig_path_from(|name| std::env::var_os(name))
}

/// [`local_kubeconfig_path`] with the environment passed in; empty values count as unset.
fn kubeconfig_path_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = var("SWAPPO_KUBECONFIG") {
        return path;
    }
    let state = var("SWAPPO_STATE").unwrap_or_else(|| {
        var("SWAPPO_CACHE")
            .unwrap_or_else(|| {
                var("HOME")
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".cache/swappo")
            })
            .join("state")
    });
    state.join("cluster/kubeconfig")
}

/// The client configuration of the test cluster: from `KUBECONFIG` when set, otherwise from
/// [`local_kubeconfig_path`].
pub async fn kube_config() -> Result<Config, KubeError> {
    let (kubeconfig, path) = match std::env::var("KUBECONFIG") {
        Ok(list) if !list.is_empty() => (Kubeconfig::from_env(), list),
        _ => {
            let path = local_kubeconfig_path();
            (
                Kubeconfig::read_from(&path).map(Some),
                path.display().to_string(),
            )
        }
    };
    let kubeconfig = kubeconfig
        .and_then(|k| k.ok_or(kube::config::KubeconfigError::CurrentContextNotSet))
        .map_err(|source| KubeError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeError::Kubeconfig { path, source })
}

/// An admin client of the test cluster; panics with the reason (and `make cluster-up`)
/// when there is none.
pub async fn kube_client() -> Client {
    let config = kube_config().await.unwrap_or_else(|e| panic!("{e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("{}", KubeError::Client(e)))
}

/// Waits until `cond` holds for the object `name` (or its absence), at most `timeout`;
/// returns the object as last seen. The timeout is a failure guard for a stuck cluster.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> Result<Option<K>, KubeError>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(source)) => Err(KubeError::Watch {
            what: what.to_owned(),
            source,
        }),
        Err(_) => Err(KubeError::Timeout(timeout, what.to_owned())),
    }
}

/// Server-side applies `crd` under `field_manager` (forced, so concurrent tests converge on
/// one version) and waits, at most `timeout`, until the API server serves it (Established).
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    field_manager: &str,
    timeout: Duration,
) -> Result<(), KubeError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|source| KubeError::Api {
        what: format!("apply CRD {name}"),
        source,
    })?;
    let what = format!("CRD {name} Established");
    wait_for(
        &crds,
        &name,
        &what,
        timeout,
        conditions::is_crd_established(),
    )
    .await?;
    Ok(())
}

/// Calls `probe` every 250 ms until it returns `Some`, at most `timeout`; for states that a
/// single-object watch cannot express (lists, "gone", several objects). The timeout is a
/// failure guard for a stuck cluster, not a timing assertion.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(KubeError::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh namespace for one test, deleted (with everything in it) when dropped. Its name
/// is `<prefix><random>`; it carries [`TEST_NAMESPACE_LABEL`].
pub struct TestNamespace {
    name: String,
    client: Client,
    config: Config,
}

impl TestNamespace {
    /// Creates the namespace and waits for its `default` ServiceAccount (the ServiceAccount
    /// admission plugin refuses pods until it exists). Panics with the reason on failure.
    pub async fn new(prefix: &str) -> Self {
        Self::try_new(prefix)
            .await
            .unwrap_or_else(|e| panic!("test namespace: {e}"))
    }

    /// [`TestNamespace::new`], returning the error instead of panicking.
    pub async fn try_new(prefix: &str) -> Result<Self, KubeError> {
        let config = kube_config().await?;
        let client = Client::try_from(config.clone()).map_err(KubeError::Client)?;
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_NAMESPACE_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| KubeError::Api {
                what: format!("create namespace {name}"),
                source,
            })?;
        let this = Self {
            name,
            client,
            config,
        };
        let accounts: Api<ServiceAccount> = this.api();
        let what = format!("ServiceAccount {}/default", this.name);
        wait_for(
            &accounts,
            "default",
            &what,
            DEFAULT_SA_TIMEOUT,
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await?;
        Ok(this)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin client this namespace was made with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// An admin `Api` for namespaced resources of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates the ServiceAccount `name` in this namespace (if missing) and returns a client
    /// that authenticates as it, with a short-lived token from the TokenRequest API.
    pub async fn service_account_client(&self, name: &str) -> Result<Client, KubeError> {
        let accounts: Api<ServiceAccount> = self.api();
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => {
                return Err(KubeError::Api {
                    what: format!("create ServiceAccount {name}"),
                    source,
                });
            }
        }
        // 10 minutes: the API server's minimum is 10 minutes; a test needs far less.
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|source| KubeError::Api {
                what: format!("request a token for ServiceAccount {name}"),
                source,
            })?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
        let mut config = self.config.clone();
        // AuthInfo's token is a secrecy::SecretString; going through serde keeps that crate
        // out of the dependencies. The token never reaches a log: AuthInfo redacts it.
        config.auth_info =
            serde_json::from_value::<AuthInfo>(serde_json::json!({ "token": token }))
                .expect("an AuthInfo with only a token deserializes");
        config.default_namespace = self.name.clone();
        Client::try_from(config).map_err(KubeError::Client)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // A fresh client on the cleanup thread's runtime: `self.client` is bound to the test's
        // runtime, which is blocked while this runs.
        let config = self.config.clone();
        let name = self.name.clone();
        block_on_cleanup(async move {
            let deleted = match Client::try_from(config) {
                Ok(client) => Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = deleted {
                eprintln!("testkit: could not delete namespace {name}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::kubeconfig_path_from;
    use std::ffi::OsString;
    use std::path::PathBuf;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_kubeconfig_path_follows_the_same_defaults_as_env_sh() {
        let path = |pairs: &[(&str, &str)]| kubeconfig_path_from(env(pairs));
        assert_eq!(
            path(&[("HOME", "/home/dev")]),
            PathBuf::from("/home/dev/.cache/swappo/state/cluster/kubeconfig")
        );
        assert_eq!(
            path(&[("HOME", "/home/dev"), ("SWAPPO_CACHE", "/c")]),
            PathBuf::from("/c/state/cluster/kubeconfig")
        );
        assert_eq!(
            path(&[("SWAPPO_CACHE", "/c"), ("SWAPPO_STATE", "/s")]),
            PathBuf::from("/s/cluster/kubeconfig")
        );
        assert_eq!(
            path(&[("SWAPPO_STATE", "/s"), ("SWAPPO_KUBECONFIG", "/k.yaml")]),
            PathBuf::from("/k.yaml")
        );
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let path = kubeconfig_path_from(env(&[("SWAPPO_KUBECONFIG", ""), ("HOME", "/h")]));
        assert_eq!(
            path,
            PathBuf::from("/h/.cache/swappo/state/cluster/kubeconfig")
        );
    }
}
