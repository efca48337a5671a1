//! Chainable test builders: `SwappoMessaging::test().with_queue("q").with_consumer("d", "q")`.
//! Test-only: compiled for the unit tests and, behind the `fixtures` feature, for the
//! integration tests (so both use the same fixtures); not part of the operator binary.
use crate::crd::{
    BrokerSpec, ConsumerSpec, DeadLetterSpec, ExternalBroker, QueueSpec, QueueType,
    SwappoMessaging, SwappoMessagingSpec,
};
use kube::api::ObjectMeta;

/// Test constructors and modifiers for [`SwappoMessaging`].
pub trait TestExt: Sized {
    /// `test` in namespace `test-ns` with a fixed uid and generation 1, default spec.
    fn test() -> Self;
    /// An object `name` in `namespace` with a default spec, ready to create on a cluster.
    fn new_in(name: &str, namespace: &str) -> Self;
    /// Adds a quorum queue with a dead-letter limit of 5.
    fn with_queue(self, name: &str) -> Self;
    /// Adds a consumer of `queue` scaling Deployment `deployment`.
    fn with_consumer(self, deployment: &str, queue: &str) -> Self;
    /// Adopts the external broker at `host` (port 5672) with credentials Secret `creds`.
    fn with_external(self, host: &str, tls: bool) -> Self;
    /// Uses the existing Secret `name` for the broker credentials.
    fn with_credentials_secret(self, name: &str) -> Self;
}

impl TestExt for SwappoMessaging {
    fn test() -> Self {
        let mut sm = Self::new_in("test", "test-ns");
        sm.metadata.uid = Some("0b4c1e3e-0000-4000-8000-000000000001".into());
        sm.metadata.generation = Some(1);
        sm
    }

    fn new_in(name: &str, namespace: &str) -> Self {
        SwappoMessaging {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: SwappoMessagingSpec::default(),
            status: None,
        }
    }

    fn with_queue(mut self, name: &str) -> Self {
        self.spec.queues.push(QueueSpec {
            name: name.into(),
            queue_type: QueueType::Quorum,
            dead_letter: Some(DeadLetterSpec { max_deliveries: 5 }),
            message_ttl_seconds: None,
            max_priority: None,
            legacy: false,
        });
        self
    }

    fn with_consumer(mut self, deployment: &str, queue: &str) -> Self {
        self.spec.consumers.push(ConsumerSpec {
            deployment: deployment.into(),
            queue: queue.into(),
            min_replicas: 1,
            max_replicas: 10,
            messages_per_replica: 100,
            drain_within_seconds: None,
            scale_down_delay_seconds: 300,
        });
        self
    }

    fn with_external(mut self, host: &str, tls: bool) -> Self {
        let creds = self.spec.broker.credentials_secret.take();
        self.spec.broker = BrokerSpec {
            external: Some(ExternalBroker {
                host: host.into(),
                port: crate::crd::AMQP_PORT,
                management_port: crate::crd::MANAGEMENT_PORT,
                tls,
            }),
            credentials_secret: creds.or_else(|| Some("external-creds".into())),
            ..BrokerSpec::default()
        };
        self
    }

    fn with_credentials_secret(mut self, name: &str) -> Self {
        self.spec.broker.credentials_secret = Some(name.into());
        self
    }
}
