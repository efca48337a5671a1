//! Test isolation on the shared local broker and database.
//!
//! Tests share one RabbitMQ and one PostgreSQL (started by `make testenv-deps`) and run in
//! parallel, so each test takes its own vhost ([`TestVhost`]) or database ([`TestDb`]) and
//! removes it when dropped. Endpoints come from `RABBITMQ_URL`, `RABBITMQ_MANAGEMENT_URL` and
//! `DATABASE_URL`, with the defaults `scripts/env.sh` sets up.
//! Control-plane tests take a namespace of their own on the local Kubernetes control plane
//! ([`TestNamespace`], module [`kube`]; `make cluster-up`); tests on its real node (kubelet +
//! containerd) use module [`node`].
#![forbid(unsafe_code)]

mod database;
pub mod kube;
mod management;
pub mod node;
mod outage_proxy;
mod private_postgres;
mod private_rabbitmq;
mod vhost;

pub use crate::kube::{
    KubeError, TestNamespace, apply_crd, eventually, kube_client, kube_config, wait_for,
};
pub use database::TestDb;
pub use management::{Error as ManagementError, Management, QueueInfo};
pub use outage_proxy::OutageProxy;
pub use private_postgres::PrivatePostgres;
pub use private_rabbitmq::PrivateRabbitMq;
pub use vhost::TestVhost;

/// Default test credentials; they must match `scripts/env.sh`.
const DEFAULT_USER: &str = "swappo";
const DEFAULT_PASSWORD: &str = "swappo-local-test";

/// The AMQP URL of the shared test broker's default vhost (`RABBITMQ_URL`).
pub fn rabbitmq_url() -> String {
    std::env::var("RABBITMQ_URL")
        .unwrap_or_else(|_| format!("amqp://{DEFAULT_USER}:{DEFAULT_PASSWORD}@127.0.0.1:5672/%2f"))
}

/// The management API base URL of the shared test broker (`RABBITMQ_MANAGEMENT_URL`),
/// credentials included as userinfo.
pub fn management_url() -> String {
    std::env::var("RABBITMQ_MANAGEMENT_URL")
        .unwrap_or_else(|_| format!("http://{DEFAULT_USER}:{DEFAULT_PASSWORD}@127.0.0.1:15672"))
}

/// The URL of the shared test database (`DATABASE_URL`); [`TestDb`] creates siblings of it.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        format!("postgres://{DEFAULT_USER}:{DEFAULT_PASSWORD}@127.0.0.1:5432/swappo_test")
    })
}

/// A name unique to this test run: `prefix` and 12 random hex digits, valid as a vhost,
/// queue, database or Kubernetes name (lowercase, digits and `-`/`_` from the prefix).
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// Runs an async cleanup to completion from a `Drop` impl, on a thread of its own so it
/// works whether or not the dropping thread is inside a tokio runtime.
pub(crate) fn block_on_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a cleanup runtime starts")
            .block_on(cleanup)
    })
    .join();
    if joined.is_err() {
        eprintln!("testkit: cleanup panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let a = unique_name("t-");
        let b = unique_name("t-");
        assert_ne!(a, b);
        assert!(a.starts_with("t-") && a.len() == 14, "{a}");
    }
}
